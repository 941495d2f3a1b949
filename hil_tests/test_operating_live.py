"""Operating the real daemon: `gatewayd status`, `tail`, `reload` and SIGHUP, as an integrator runs them.

One plant with two Modbus devices (both on the simulator, as two PLCs on one network would be): the
status screen shows them up and the store and uplink figures; a tail follows a tag pattern live; a
reload that adds a tag to one device and changes its poll interval restarts that device only, and the
new tag's samples reach the platform; a broken file and a restart-only change are refused while the
daemon runs on; SIGHUP reloads too; and upstream, the chain stays intact with every reload recorded.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml

from core.types import Quality
from gatewayd.platform.verify import Kind
from hil_tests.conftest import Plant, committed
from hil_tests.harness import ROOT, run_cli
from hil_tests.sim.layout import plant_tags
from hil_tests.test_end_to_end import events_of, samples_by_tag, wait_quiet

SECOND = plant_tags(9)[3:6]  # flows and gas of tank T-101, read a second time as another PLC's


def b_tag(tag: dict[str, Any]) -> dict[str, Any]:
    return {**tag, "name": f"B-{tag['name']}"}


def cli(plant: Plant, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, "-c", str(plant.config))


def status(plant: Plant) -> dict[str, Any] | None:
    result = cli(plant, "status", "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def device(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in state["devices"] if item["name"] == name)


def wait_for(what: str, probe: Callable[[], Any], plant: Plant, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{plant.daemons[-1].log_text()[-3000:]}")


def edit_config(plant: Plant, change: Callable[[dict[str, Any]], None]) -> None:
    document = yaml.safe_load(plant.config.read_text())
    change(document)
    plant.config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def follow(argv: list[str], enough: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
    """Run a `gatewayd tail` until its output satisfies `enough`, then Ctrl-C it; its lines."""
    process = subprocess.Popen([sys.executable, "-m", "gatewayd", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while not enough(seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0, process.stderr.read()
    return seen


def test_status_tail_reload_and_sighup_on_the_running_daemon(plant_factory):
    plant = plant_factory(tags=9, poll_interval=0.5, scan_interval=0.5, max_interval=2.0, extra_devices=[
        {"name": "plc-b", "driver": "modbus_tcp", "host": "127.0.0.1", "port": 0, "poll_interval": 1.0,
         "timeout": 1.0, "tags": [b_tag(tag) for tag in SECOND[:2]]}])
    edit_config(plant, lambda doc: doc["devices"][1].update(port=plant.plc.port))
    daemon = plant.start_daemon()

    # status: both devices up, the store and the uplink at work
    state = wait_for("both devices polled and a batch acknowledged",
                     lambda: (s := status(plant)) and all(d["up"] and d["polls"] for d in s["devices"])
                     and s["uplink"]["acknowledged"] and s, plant)
    assert state["gateway"]["config_sha256"] and state["tags"]["total"] == 11
    screen = cli(plant, "status")
    assert screen.returncode == 0, screen.stderr
    assert "devices: 2/2 up" in screen.stdout and re.search(r"tank-plc\s+modbus_tcp\s+up", screen.stdout)
    assert re.search(r"store: \d+ rows pending, \d+ in flight", screen.stdout)
    assert f"uplink: connected to 127.0.0.1:{plant.broker.port}" in screen.stdout
    assert "data quality: period" in screen.stdout and re.search(r"tank-plc\s+100\.0% / 100\.0%", screen.stdout)
    figures = {device["device"]: device for device in state["data_quality"]["devices"]}
    assert set(figures) == {"tank-plc", "plc-b"} and figures["tank-plc"]["since_start"]["reads"] > 0

    # tail: live samples of the tags matching a pattern, and nothing else
    lines = follow(["tail", "-c", str(plant.config), "--tag", "[LP]T101"],
                   lambda seen: {"LT101", "PT101"} <= {line.split()[1] for line in seen[1:]})
    assert lines[0] == "following tag [LP]T101: 2 tags and their events (Ctrl-C ends)"
    assert {line.split()[1] for line in lines[1:]} == {"LT101", "PT101"}

    # reload: a tag added to plc-b and a new poll interval restart plc-b only
    before = status(plant)
    added = b_tag(SECOND[2])

    def add_tag(doc: dict[str, Any]) -> None:
        doc["devices"][1]["tags"].append(added)
        doc["devices"][1]["poll_interval"] = 0.7

    edit_config(plant, add_tag)
    reload = cli(plant, "reload")
    assert reload.returncode == 0, reload.stderr
    assert "devices restarted: plc-b; tags added: " + added["name"] in reload.stdout
    after = status(plant)
    tank, tank_before = device(after, "tank-plc"), device(before, "tank-plc")
    assert tank["since"] == tank_before["since"] and tank["polls"] >= tank_before["polls"], \
        "tank-plc kept its driver and its connection"
    assert tank["reconnects"] == tank_before["reconnects"]
    assert device(after, "plc-b")["since"] > device(before, "plc-b")["since"], "plc-b restarted"
    assert after["gateway"]["reloads"] == 1 and after["tags"]["total"] == 12
    assert after["gateway"]["config_sha256"] != before["gateway"]["config_sha256"]
    wait_for("the new tag polled", lambda: device(status(plant), "plc-b")["polls"] >= 2, plant)

    # a broken file and a restart-only change are refused; the daemon runs on with the old config
    good = plant.config.read_text()
    plant.config.write_text(good.replace("poll_interval: 0.7", "poll_interval: -1", 1))
    broken = cli(plant, "reload")
    assert broken.returncode == 1
    assert re.search(rf"refused: configuration invalid, the running one stays:\n{re.escape(str(plant.config))}"
                     r":\d+: devices\[1\]\.poll_interval: ", broken.stderr), broken.stderr
    plant.config.write_text(good.replace(f"state_dir: {plant.workdir}/state", f"state_dir: {plant.workdir}/s2"))
    moved = run_cli("reload", "--socket", str(plant.workdir / "run" / "control.sock"))
    assert moved.returncode == 1 and "gateway.state_dir, store.path changed" in moved.stderr, moved.stderr
    running = status(plant)
    assert running["gateway"]["reloads_refused"] == 2 and device(running, "plc-b")["up"]

    # SIGHUP: the same reload, reported in the journal; a new uplink section restarts the publisher
    plant.config.write_text(good.replace("scan_interval: 0.5", "scan_interval: 0.4")
                            .replace("transport: plain", "transport: plain\n  batch_max_rows: 50"))
    acknowledged = status(plant)["uplink"]["acknowledged"]
    daemon.signal(signal.SIGHUP)
    wait_for("the SIGHUP reload", lambda: status(plant)["gateway"]["reloads"] == 2, plant)
    log = daemon.log_text()
    assert "configuration reloaded by SIGHUP" in log and "applied: gateway.scan_interval; uplink restarted" in log
    wait_for("a batch acknowledged by the new publisher",
             lambda: status(plant)["uplink"]["acknowledged"] > acknowledged, plant)

    assert daemon.stop() == 0
    wait_quiet(plant)
    report = plant.report()
    assert report.ok, report.format()
    assert report.count(Kind.GAP) == 0 and (report.samples, report.events) == committed(daemon), \
        "across every reload, each committed sample and event arrived once"
    new_tag = samples_by_tag(plant)[added["name"]]
    assert any(value is not None and quality == Quality.GOOD for _, value, quality in new_tag)
    reloaded = events_of(plant, "config_reloaded")
    assert [event["data"]["account"] for event in reloaded][-1] == "SIGHUP"
    assert reloaded[0]["data"]["changes"]["devices_restarted"] == ["plc-b"]
    rejected = events_of(plant, "config_rejected")
    assert len(rejected) == 2 and "poll_interval" in rejected[0]["data"]["errors"][0]
