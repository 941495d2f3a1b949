"""The console in a real headless Chromium, against the real daemon with an OPC UA server and a gas panel.

One browser session covers the scenario: the page loads without console errors; live OPC UA values
change on screen; a gas leak the panel simulator raises shows its alarm on the alarms page within 2 s
of the alarm's event (the event's time from the daemon, the on-screen time recorded in the page by a
MutationObserver the moment the row is drawn: both on this machine's clock, nothing timed by sleeps);
the trend of the last 10 minutes shows the excursion; a frozen OPC UA server (SIGSTOP) turns its tags
STALE on screen. Screenshots of each step are written to the test's tmp dir (printed at the end).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By

from gatewayd.operator.control import call, socket_path
from hil_tests.browser import chromium, severe_messages
from hil_tests.conftest import GATEWAY_ID
from hil_tests.harness import Broker, Daemon, Process, free_port, make_key, stop_all, wait_for_port
from hil_tests.simprocess import SimProcess
from hil_tests.test_gds import PanelProcess

# a frozen server's tags turn STALE (keepalive + 1) publishing intervals after its last publish, 3.5 s, and
# COMM_FAILURE at the driver's watchdog, 6 s (asyncua's own check waits `timeout`, longer): 2.5 s of STALE,
# two and a half of the console's polls
PUBLISHING, KEEPALIVE, TIMEOUT = 0.5, 6, 8.0
MOVING = [f"G{i}" for i in range(3)]
LEAK = 45.0  # %LEL: past both gas levels (20, 40)
WAIT = 60.0
ALARM_WITHIN = 2.0  # seconds from the alarm's event to the row on screen

# Recorded in the page: every value and quality a point row shows, with the time it was drawn, and the
# time each alarm first showed in each state. A MutationObserver runs right after the DOM changed.
OBSERVER = """
window.__seen = {values: {}, qualities: {}, alarms: {}};
const note = (list, text, now) => { if (!list.length || list[list.length - 1][1] !== text) list.push([now, text]); };
const look = () => {
  const now = Date.now() / 1000, seen = window.__seen;
  for (const row of document.querySelectorAll('#points-table tbody tr')) {
    const tag = row.dataset.tag;
    note(seen.values[tag] = seen.values[tag] || [], row.querySelector('.value').textContent, now);
    note(seen.qualities[tag] = seen.qualities[tag] || [], row.querySelector('.quality').textContent, now);
  }
  for (const row of document.querySelectorAll('#alarms-table tbody tr')) {
    const key = row.dataset.alarm + ' ' + row.querySelector('.state').textContent;
    if (!(key in seen.alarms)) seen.alarms[key] = now;
  }
};
new MutationObserver(look).observe(document.querySelector('main'),
                                  {subtree: true, childList: true, characterData: true});
look();
"""


@pytest.fixture
def rig(tmp_path: Path, sim_processes):
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", str(len(MOVING)), "--period", "0.2"],
                                      "OPC UA simulator"))
    panel = PanelProcess()
    broker = Broker(tmp_path).start()
    key, _ = make_key(tmp_path)
    console_port = free_port()
    config = {
        "gateway": {"id": GATEWAY_ID, "scan_interval": 1.0, "state_dir": str(tmp_path / "state"),
                    "cache_dir": str(tmp_path / "cache"), "runtime_dir": str(tmp_path / "run")},
        "devices": [
            {"name": "dcs", "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{server.port}",
             "security_policy": "None", "timeout": TIMEOUT, "publishing_interval": PUBLISHING,
             "keepalive_count": KEEPALIVE, "backoff_initial": 0.2, "backoff_max": 1.0,
             "tags": [{"name": name, "node": f"ns=2;s=GEN{i:05d}", "unit": "bar"} for i, name in enumerate(MOVING)]},
            {"name": "gds", "driver": "gds", "transport": "tcp", "host": "127.0.0.1", "port": panel.port,
             "profile": "generic", "poll_interval": 0.25, "timeout": 0.5, "heartbeat_timeout": 3.0,
             "channels": [{"channel": 1, "name": "GT101", "gas": "methane", "unit": "%LEL", "range": [0, 100],
                           "deadband": 0.5, "description": "T-101 dike"}]},
        ],
        "rules": {"gas": [{"tag": "GT101", "type": "combustible", "gas": "methane", "level1": 20, "level2": 40}]},
        "uplink": {"host": "127.0.0.1", "port": broker.port, "transport": "plain", "signing_key": str(key)},
        "console": {"listen": f"127.0.0.1:{console_port}", "poll_interval": 1.0},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    daemon = Daemon(tmp_path, path).start()
    console = Process("console", [*Daemon(tmp_path, path).argv[:3], "console", "-c", str(path)],
                      tmp_path / "console.log").start()
    try:
        wait_for_port(console_port, timeout=60)
        yield {"server": server, "panel": panel, "daemon": daemon, "console": console, "tmp": tmp_path,
               "url": f"http://127.0.0.1:{console_port}/", "control": socket_path(tmp_path / "run")}
    finally:
        stop_all(console, daemon, broker)
        panel.close()


def wait_until(condition, what, rig: dict, timeout: float = WAIT):
    """Poll `condition` until it holds; `what` (text, or a function giving text) says what failed."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert rig["daemon"].running, rig["daemon"].log_text()[-3000:]
        assert rig["console"].running, rig["console"].log_text()[-3000:]
        assert time.monotonic() < deadline, f"{what() if callable(what) else what} within {timeout} s"
        time.sleep(0.1)


def seen(browser) -> dict:
    return browser.execute_script("return window.__seen")


def alarm_since(rig: dict, alarm: str) -> float | None:
    return next((item["since"] for item in call(rig["control"], {"cmd": "alarms"}) if item["id"] == alarm
                 and item["state"] != "NORM"), None)


def test_the_console_shows_live_values_a_gas_alarm_its_trend_and_a_frozen_server_going_stale(rig):
    shots, figures = [], {}
    with chromium() as browser:
        def shoot(name: str) -> None:
            path = rig["tmp"] / f"console-{name}.png"
            browser.save_screenshot(str(path))
            shots.append(str(path))

        browser.get(rig["url"] + "#points")
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, '#points-table tr[data-tag="G0"]'),
                   "the point table lists the OPC UA tags", rig)
        browser.execute_script(OBSERVER)

        # live values: each OPC UA tag shows at least three values, drawn at different times
        wait_until(lambda: all(len({text for _, text in seen(browser)["values"].get(tag, [])} - {"-"}) >= 3
                               for tag in MOVING), "every OPC UA value changes on screen", rig)
        assert all(quality == "GOOD" for tag in MOVING for _, quality in seen(browser)["qualities"][tag][-1:])
        shoot("points")

        # a gas leak: the alarm's row is drawn within 2 s of the alarm's event
        browser.get(rig["url"] + "#alarms")
        leak_at = time.time()
        rig["panel"].send(f"gas 1 {LEAK}")
        drawn = wait_until(lambda: seen(browser)["alarms"].get("GT101.GAS2 UNACK"), "the level-2 gas alarm on screen",
                           rig)
        since = alarm_since(rig, "GT101.GAS2")
        assert since is not None and leak_at <= since <= drawn
        figures["alarm_event_to_screen_s"] = round(drawn - since, 3)
        figures["leak_to_screen_s"] = round(drawn - leak_at, 3)
        assert drawn - since <= ALARM_WITHIN, figures
        shoot("alarms")
        rig["panel"].send("gas 1 0.5")

        # the trend of the last 10 minutes shows the excursion, up to the leak's value, and the limits
        browser.get(rig["url"] + "#points")
        browser.find_element(By.CSS_SELECTOR, '#points-table tr[data-tag="GT101"] button').click()

        def drawn_high():
            path = browser.find_elements(By.CSS_SELECTOR, '#trend-chart path[data-tag="GT101"]')
            high = path[0].get_attribute("data-high") if path else ""
            return float(high) if high else None

        wait_until(lambda: (drawn_high() or 0) >= LEAK, "the trend draws the excursion", rig)
        chart = browser.find_element(By.CSS_SELECTOR, "#trend-chart svg")
        assert float(chart.get_attribute("data-to")) - float(chart.get_attribute("data-from")) == pytest.approx(600)
        limits = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#trend-chart .limit-label")]
        assert limits == ["GT101 L1", "GT101 L2"]
        shoot("trend")

        # a frozen OPC UA server: its tags turn STALE on screen, keeping their last value
        browser.get(rig["url"] + "#points")
        frozen_at = time.time()
        rig["server"].signal(signal.SIGSTOP)
        try:
            def stale_at(tag: str) -> float | None:
                return next((at for at, text in seen(browser)["qualities"][tag] if text == "STALE" and at > frozen_at),
                            None)

            wait_until(lambda: all(stale_at(tag) for tag in MOVING),
                       lambda: f"every OPC UA tag STALE on screen (frozen at {frozen_at:.3f}; seen "
                               f"{ {tag: seen(browser)['qualities'][tag] for tag in MOVING} })", rig)
            figures["freeze_to_stale_on_screen_s"] = round(max(stale_at(tag) for tag in MOVING) - frozen_at, 3)
            assert all(seen(browser)["values"][tag][-1][1] != "-" for tag in MOVING), "STALE keeps the last value"
            shoot("stale")
        finally:
            rig["server"].signal(signal.SIGCONT)
        errors = severe_messages(browser)
    assert not errors, errors
    print(json.dumps({**figures, "screenshots": shots}))
