"""Status, tail and reload without I/O: config diffs, a reload's plan adopted by a Daemon whose tasks never
run (state carried over a rebuild), the tail's fan-out and its bounds, and the status screen. The running
daemon is in hil_tests/test_operating_live.py."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_control import ROOT, serving

from drivers.kit import DriverStats
from gatewayd.config import parse_config
from gatewayd.config.diff import diff_configs, essence, restart_message
from gatewayd.config.model import point_tags
from gatewayd.daemon import Daemon
from gatewayd.keys import generate_key
from gatewayd.operator import operate
from gatewayd.operator.control import CommandError, stream
from gatewayd.operator.render import render_reload, render_status, render_tail_line
from gatewayd.operator.tail import Fanout, Subscriber, TailFilter
from gatewayd.reload import ReloadRefused
from core.types import Event, Priority, Quality
from gatewayd.uplink.publisher import UplinkStats
from gatewayd.values.points import PointTable
from store import SampleBlock
from tests.uplinkschemas import event_problems

CONFIG = """\
gateway:
  id: GW-OP-01
  state_dir: state
  runtime_dir: run
devices:
  - name: plc-a
    driver: modbus_tcp
    host: 10.0.0.5
    tags:
      - name: LT101
        address: 0
        type: float32
        unit: m
        range: [0, 10]
        alarms: {hh: 9.5, h: 9, deadband: 0.1, priority: high}
      - name: PT101
        address: 2
        type: float32
  - name: plc-b
    driver: modbus_tcp
    host: 10.0.0.6
    poll_interval: 1s
    tags:
      - name: FT201
        address: 0
        type: int16
uplink:
  host: platform.example.org
  signing_key: /etc/gatewayd/signing.key
"""


def config(tmp_path: Path, source: str = CONFIG):
    return parse_config(source, tmp_path / "config.yaml")


def edited(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, old
    return source.replace(old, new)


# ------------------------------------------------------------------------------------------ diffing

def test_identical_configs_differ_in_nothing_even_when_lines_move(tmp_path: Path):
    old = config(tmp_path)
    new = config(tmp_path, "# a comment pushes every line down\n\n" + CONFIG)
    assert old.devices[0].line != new.devices[0].line, "the line numbers did move"
    assert essence(old) == essence(new)
    diff = diff_configs(old, new)
    assert diff.empty and diff.summary() == "no change"


def test_a_new_tag_and_a_new_poll_interval_restart_only_that_device(tmp_path: Path):
    source = edited(CONFIG, "    poll_interval: 1s\n", "    poll_interval: 500ms\n")
    source = edited(source, "      - name: FT201\n        address: 0\n        type: int16\n",
                    "      - name: FT201\n        address: 0\n        type: int16\n"
                    "      - name: FT202\n        address: 1\n        type: int16\n")
    diff = diff_configs(config(tmp_path), config(tmp_path, source))
    assert diff.devices_restarted == ["plc-b"]
    assert (diff.devices_added, diff.devices_removed) == ([], [])
    # FT201 changes with its device: its default stale_after is three poll intervals
    assert (diff.tags_added, diff.tags_removed, diff.tags_changed) == (["FT202"], [], ["FT201"])
    assert diff.rebuild_points and not diff.rules_changed and not diff.uplink_changed and not diff.needs_restart
    assert diff.summary() == "devices restarted: plc-b; tags added: FT202; tags changed: FT201"


def test_a_new_alarm_limit_changes_the_tag_and_rebuilds_the_points(tmp_path: Path):
    source = edited(CONFIG, "h: 9, deadband", "h: 8, deadband")
    diff = diff_configs(config(tmp_path), config(tmp_path, source))
    assert diff.tags_changed == ["LT101"] and diff.devices_restarted == ["plc-a"] and diff.rebuild_points


def test_rules_interlocks_and_uplink_changes_are_named(tmp_path: Path):
    source = CONFIG.replace("  host: platform.example.org\n", "  host: platform2.example.org\n")
    source += ("rules:\n  units: {farm: {max_bypassed: 1}}\n  interlocks:\n"
               "    - {id: SIS-1, unit: farm, bypass: PT101, protects: [LT101], max_bypass: 8h}\n")
    diff = diff_configs(config(tmp_path), config(tmp_path, source))
    assert diff.rules_changed and diff.uplink_changed
    assert diff.tags_added == ["IL.SIS-1"], "an interlock's virtual tag joins the point table"
    assert diff.devices_restarted == [] and diff.rebuild_points
    assert "rules changed" in diff.summary() and "uplink restarted" in diff.summary()


@pytest.mark.parametrize("old, new, keys", [
    ("  state_dir: state\n", "  state_dir: state2\n", ["gateway.state_dir", "store.path"]),
    ("  id: GW-OP-01\n", "  id: GW-OP-02\n", ["gateway.id"]),
    ("uplink:\n", "store: {max_bytes: 10 MB}\nuplink:\n", ["store.max_bytes"]),
    ("uplink:\n", "metrics: {listen: 127.0.0.1:9108}\nuplink:\n", ["metrics.listen"]),
    ("uplink:\n", "control: {approver_group: leads, approval_window: 5m}\nuplink:\n",
     ["control.approver_group", "control.approval_window"]),
])
def test_what_only_a_restart_can_change_is_named(tmp_path: Path, old: str, new: str, keys: list[str]):
    diff = diff_configs(config(tmp_path), config(tmp_path, edited(CONFIG, old, new)))
    assert diff.needs_restart == keys
    assert restart_message(diff.needs_restart).startswith(f"{', '.join(keys)} changed: the daemon sets")


def test_scan_interval_and_name_apply_live(tmp_path: Path):
    source = edited(CONFIG, "  id: GW-OP-01\n", "  id: GW-OP-01\n  name: tank farm\n  scan_interval: 2s\n")
    diff = diff_configs(config(tmp_path), config(tmp_path, source))
    assert diff.gateway_changed == ["gateway.name", "gateway.scan_interval"] and not diff.needs_restart


def test_removing_a_device_removes_its_tags(tmp_path: Path):
    source = CONFIG[:CONFIG.index("  - name: plc-b")] + CONFIG[CONFIG.index("uplink:"):]
    diff = diff_configs(config(tmp_path), config(tmp_path, source))
    assert (diff.devices_removed, diff.tags_removed) == (["plc-b"], ["FT201"])


# ------------------------------------------------------------------------------------------ carrying state over

class FakeDriver:
    def __init__(self, down: bool = False):
        self.is_down = down
        self.stats = DriverStats(polls=7, failures=2, reconnects=1, last_poll_latency=0.0123, requests_per_poll=3)


def fake_daemon(tmp_path: Path, cfg) -> Daemon:
    """A Daemon built from `cfg` (with a signing key of its own), whose tasks never run: its drivers and
    publisher are stand-ins with known figures."""
    key = tmp_path / "signing.key"
    if not key.exists():
        generate_key(key)
    daemon = Daemon(dataclasses.replace(cfg, uplink=dataclasses.replace(cfg.uplink, signing_key=key)))
    daemon.config = cfg
    daemon.drivers = {"plc-a": FakeDriver(), "plc-b": FakeDriver(down=True)}
    daemon.publisher = SimpleNamespace(stats=UplinkStats(connected=True, acknowledged=4), inflight=1,
                                       keys=SimpleNamespace(began_with_next=False))
    return daemon


def test_a_rebuild_keeps_values_report_state_alarm_states_and_running_sinks(tmp_path: Path):
    old_config = config(tmp_path)
    daemon = fake_daemon(tmp_path, old_config)
    sink_a = daemon.sinks["plc-a"]
    sink_a.write(np.array([0, 1]), np.array([9.8, 1.5]))  # LT101 above HH: alarms raise
    daemon.scanner.tick()
    before = {item["id"]: item["state"] for item in daemon.engine.alarms()}
    assert before == {"LT101.HH": "UNACK", "LT101.H": "UNACK"}
    reported = daemon.scanner.stats.samples
    old_scanner = daemon.scanner

    source = edited(CONFIG, "  - name: plc-a\n", "  - name: plc-0\n    driver: modbus_tcp\n    host: 10.0.0.4\n"
                    "    tags:\n      - {name: AT001, address: 0, type: int16}\n  - name: plc-a\n")
    new_config = config(tmp_path, source)
    diff = diff_configs(old_config, new_config)
    assert diff.tags_added == ["AT001"] and diff.devices_added == ["plc-0"] and not diff.devices_restarted
    plan = daemon.reloader.build(new_config, "ab" * 32, diff, "test")
    assert list(plan.drivers) == ["plc-0"] and daemon.table is old_scanner.table, "nothing running touched yet"
    notes = daemon._adopt_points(new_config, diff, plan.points)

    assert notes == []
    table = daemon.table
    assert daemon.scanner is not old_scanner and table.rows["AT001"] == 0 and table.rows["LT101"] == 1
    assert table.value[table.rows["LT101"]] == 9.8 and table.quality[table.rows["AT001"]] == Quality.NO_VALUE
    assert {item["id"]: item["state"] for item in daemon.engine.alarms()} == before, "alarm states carried over"
    assert set(daemon.control.handlers) >= {"alarms", "ack"}, "operator commands act on the new engine"
    assert daemon.scanner.stats.samples == reported and daemon.scanner.tap == daemon.operate.on_commit
    events = [event.kind for event in table.pending_events]
    assert events == ["tag_metadata"] and table.pending_events[0].data["tags"][0]["tag"] == "AT001"

    sink_a.write(np.array([1]), np.array([2.5]))  # the running driver of plc-a writes PT101
    assert sink_a.table is table and table.value[table.rows["PT101"]] == 2.5 and table.changed.is_set()
    daemon.scanner.tick()
    # PT101's new value and the new tag's first report (no value yet); the other tags do not repeat
    assert daemon.scanner.stats.samples == reported + 2
    quality = daemon.scanner.data_quality
    assert quality is not old_scanner.data_quality and quality.start == old_scanner.data_quality.start
    figures = {device["device"]: device for device in quality.figures(time.monotonic(), table.reads,
                                                                      tags=True)["devices"]}
    reads = {item["tag"]: item["since_start"]["reads"] for device in figures.values() for item in device["tags"]}
    assert reads["LT101"] == 1 and reads["PT101"] == 2 and reads["AT001"] == 0, "read counts carried over"
    assert figures["plc-a"]["period"]["reads"] == 3 and figures["plc-0"]["period"]["reads"] == 0


# ------------------------------------------------------------------------------------------ tail

def block(values: list[float]) -> SampleBlock:
    n = len(values)
    return SampleBlock(np.arange(n), np.full(n, 1_700_000_000.25), np.array(values), np.zeros(n, np.uint8),
                       np.full(n, np.nan))


def test_tail_filters_by_glob_device_and_events(tmp_path: Path):
    table = PointTable(point_tags(config(tmp_path)))
    rows = np.array([0, 1, 2])  # LT101, PT101, FT201
    samples = block([1.0, 2.0, 3.0])
    alarm = Event("alarm", 1.0, "LT101", "LT101.HH UNACK", Priority.HIGH, {"tag": "LT101"})
    down = Event("device_down", 1.0, "plc-b", "plc-b down", Priority.HIGH)
    fanout = Fanout()
    by_glob = fanout.subscribe(TailFilter(tag="*T1*"))
    by_device = fanout.subscribe(TailFilter(device="plc-b"))
    events_only = fanout.subscribe(TailFilter(events_only=True))
    fanout.publish(table, rows, samples, [alarm, down])

    assert [(line["type"], line.get("tag") or line["source"]) for line in by_glob.take()] == \
        [("event", "LT101"), ("sample", "LT101"), ("sample", "PT101")]
    assert [(line["type"], line.get("tag") or line["source"]) for line in by_device.take()] == \
        [("event", "plc-b"), ("sample", "FT201")]
    assert [line["kind"] for line in events_only.take()] == ["alarm", "device_down"]
    with pytest.raises(CommandError, match="no device 'plc-c'; devices: plc-a, plc-b"):
        TailFilter.from_request({"device": "plc-c"}, ["plc-a", "plc-b"])


def test_a_slow_reader_loses_lines_is_told_how_many_and_never_holds_the_scan(tmp_path: Path):
    table = PointTable(point_tags(config(tmp_path)))
    fanout = Fanout()
    slow = fanout.subscribe(TailFilter(), capacity=4)
    for _ in range(5):  # 5 ticks of 3 samples: 15 lines for room of 4
        fanout.publish(table, np.array([0, 1, 2]), block([1.0, 2.0, 3.0]), [])
    assert len(slow.lines) == 4, "the buffer never grows past its capacity"
    lines = slow.take()
    assert [line["type"] for line in lines] == ["sample"] * 4 + ["dropped"] and lines[-1]["count"] == 11
    assert slow.dropped_total == 11
    fanout.publish(table, np.array([2]), block([7.0]), [])
    assert [line["value"] for line in slow.take()] == [7.0], "after the marker the stream goes on"


def test_the_fanout_refuses_more_subscribers_than_it_serves():
    fanout = Fanout()
    for _ in range(8):
        fanout.subscribe(TailFilter())
    with pytest.raises(CommandError, match="already 8 tails"):
        fanout.subscribe(TailFilter())


def test_a_subscriber_wakes_its_reader_and_times_out_to_a_keepalive():
    async def scenario():
        subscriber = Subscriber(TailFilter(), capacity=10)
        idle = await subscriber.next(0.01)
        waiting = asyncio.create_task(subscriber.next(5.0))
        await asyncio.sleep(0)
        subscriber.offer([{"type": "event", "kind": "x"}])
        return idle, await waiting

    idle, woken = asyncio.run(scenario())
    assert idle == [] and woken == [{"type": "event", "kind": "x"}]


def test_tail_lines_read_as_text():
    ts = time.mktime((2024, 5, 1, 12, 0, 0, 0, 0, -1)) + 0.25
    assert render_tail_line({"type": "sample", "tag": "LT101", "device": "plc-a", "ts": ts, "value": 4.2,
                             "unit": "m", "quality": 0}) == "12:00:00.250  LT101            4.2 m"
    assert render_tail_line({"type": "sample", "tag": "PT101", "device": "plc-a", "ts": ts, "value": None,
                             "unit": "", "quality": 17}).endswith("PT101            -  comm_failure")
    assert render_tail_line({"type": "event", "kind": "device_down", "source": "plc-b", "ts": ts, "priority": 3,
                             "message": "plc-b down: timeout"}) == \
        "12:00:00.250  EVENT device_down [plc-b] plc-b down: timeout"
    assert render_tail_line({"type": "dropped", "count": 12}).startswith("... 12 lines dropped")
    assert render_tail_line({"type": "keepalive"}) is None


# ------------------------------------------------------------------------------------------ status

def test_status_gathers_one_screen_from_the_live_objects(tmp_path: Path):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.reloader.digest = "ab" * 32
    daemon.sinks["plc-a"].write(np.array([0, 1]), np.array([9.8, 1.5]))
    daemon.sinks["plc-b"].set_quality(np.array([0]), int(Quality.COMM_FAILURE))
    daemon.sinks["plc-a"].set_quality(np.array([1]), int(Quality.STALE))
    daemon.table.event(Event("device_down", time.time() - 90, "plc-b", "plc-b down", Priority.HIGH))
    daemon.scanner.tick()
    status = daemon.operate.status()

    assert [(d["name"], d["up"], d["driver"], d["polls"]) for d in status["devices"]] == \
        [("plc-a", True, "modbus_tcp", 7), ("plc-b", False, "modbus_tcp", 7)]
    assert status["tags"]["bad_by_reason"] == {"comm_failure": 1}
    assert status["tags"]["uncertain_by_reason"] == {"stale": 1}
    assert status["alarms"]["by_priority"] == [{"priority": "high", "total": 2, "states": {"UNACK": 2}}]
    assert status["store"]["rows_pending"] > 0 and status["store"]["oldest_pending_age"] >= 0
    screen = render_status(status)
    assert "devices: 1/2 up" in screen
    assert "plc-b   modbus_tcp  DOWN   1.5 min" in screen
    assert "12 ms" in screen, "last poll latency"
    assert "tags: 3, 1 good, 1 uncertain (1 stale), 1 bad (1 comm_failure)" in screen
    assert "alarms: 2 active, 2 unacknowledged; high 2 (2 UNACK)" in screen
    assert "interlocks: 0, 0 bypassed" in screen
    assert "uplink: connected to platform.example.org:8883; 1 batches in flight, 4 acknowledged" in screen
    assert "rate: not measured yet" in screen
    quality = {device["device"]: device for device in status["data_quality"]["devices"]}
    assert quality["plc-b"]["up"] is False and quality["plc-b"]["period"]["online"] == 0.0
    assert quality["plc-a"]["period"]["reads"] == 2 and quality["plc-b"]["period"]["reads"] == 0
    assert "DEVICE  ONLINE (PERIOD / START)" in screen and "plc-b   0.0% / 0.0%" in screen


def test_the_uplink_rate_is_measured_over_the_window(tmp_path: Path):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.reloader.digest = "cd" * 32
    stats, window = daemon.publisher.stats, daemon.operate.rates
    then = time.monotonic() - 30
    window.add(then, stats)
    window.add(then + 10, stats)  # a later sample: the window still starts at the oldest
    stats.acknowledged += 15
    stats.rows_acknowledged += 3000
    stats.bytes_published += 300_000
    status = daemon.operate.status()
    rates = status["uplink"]["rates"]  # on the live clock: at least 30 s, more on a loaded machine
    seconds = rates["window_seconds"]
    assert seconds >= 30
    assert (rates["acknowledged_per_second"] * seconds, rates["rows_acknowledged_per_second"] * seconds,
            rates["bytes_published_per_second"] * seconds) == pytest.approx((15, 3000, 300_000))
    status["uplink"]["rates"] = window.rates(then + 30, stats)  # the clock injected: exactly 30 s
    assert "30.0 batches/min, 100.0 rows/s, 10.0 kB/s over 30 s" in render_status(status)


def test_a_refused_reload_logs_its_errors_on_one_stamped_line(tmp_path: Path, caplog):
    """The journal stamps each record: an error continued on a second line would stand there unstamped."""
    daemon = fake_daemon(tmp_path, config(tmp_path))
    source = edited(CONFIG, "    poll_interval: 1s\n", "    poll_interval: -1\n")
    (tmp_path / "config.yaml").write_text(edited(source, "  host: platform", "  hots: platform"))
    with caplog.at_level("ERROR", logger="gatewayd.reload"), pytest.raises(ReloadRefused) as refused:
        asyncio.run(daemon.reloader.reload("test"))
    [record] = [record for record in caplog.records if "refused" in record.getMessage()]
    line = record.getMessage()
    assert "\n" not in line
    errors = str(refused.value).split("\n")[1:]
    assert len(errors) == 3 and all(error.startswith(f"{tmp_path / 'config.yaml'}:") for error in errors)
    assert line == "reload requested by test refused: configuration invalid, the running one stays: " + \
        "; ".join(errors)
    [rejected] = [event for event in daemon.table.take_events() if event.kind == "config_rejected"]
    assert rejected.data["errors"] == errors and rejected.data["account"] == "test"
    assert event_problems([rejected]) == []


def test_a_driver_that_fails_is_reported_and_run_again(tmp_path: Path, monkeypatch):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    monkeypatch.setattr("gatewayd.daemon.DRIVER_RESTART_DELAY", 0.0)
    runs = []

    class Failing:
        async def run(self, sink) -> None:
            runs.append(sink)
            raise RuntimeError("a bug in the driver")

    async def supervise() -> None:
        task = asyncio.create_task(daemon._supervise_driver("plc-a", Failing()))
        while len(runs) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(supervise(), 30))
    assert runs[0] is daemon.sinks["plc-a"]
    crashed = [event for event in daemon.table.take_events() if event.kind == "driver_crashed"]
    assert crashed and all((event.source, event.priority, event.data) == ("plc-a", Priority.HIGH, {})
                           for event in crashed)
    assert event_problems(crashed) == []


def test_reload_results_read_as_text():
    assert render_reload({"applied": False, "sha256": "0f" * 32}) == "configuration unchanged (sha256 0f0f0f0f0f0f0f0f)"
    assert render_reload({"applied": True, "sha256": "0f" * 32, "summary": "tags added: X",
                          "notes": ["alarm Y.HH is no longer configured; its state was dropped"]}) == \
        "configuration reloaded (sha256 0f0f0f0f0f0f0f0f): tags added: X\n" \
        "note: alarm Y.HH is no longer configured; its state was dropped"


# ------------------------------------------------------------------------------------------ over the socket

def test_status_and_tail_over_the_control_socket(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(operate, "TAIL_KEEPALIVE", 0.05)
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.reloader.digest = "ab" * 32
    with serving(tmp_path / "run", daemon.operate.handlers()) as served:
        screen = subprocess.run([sys.executable, "-m", "gatewayd", "status", "--socket", str(served.path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert screen.returncode == 0, screen.stderr
        assert screen.stdout.startswith("gateway GW-OP-01  gatewayd ") and "devices: 1/2 up" in screen.stdout

        lines = stream(served.path, {"cmd": "tail", "tag": "LT*"})
        assert next(lines) == {"type": "following", "tags": 1,
                               "filter": {"tag": "LT*", "device": None, "events_only": False}}

        async def tick():
            daemon.sinks["plc-a"].write(np.array([0, 1]), np.array([4.5, 1.0]))
            daemon.scanner.tick()

        served.run(tick())
        line = next(line for line in lines if line["type"] != "keepalive")
        assert (line["type"], line["tag"], line["value"], line["unit"]) == ("sample", "LT101", 4.5, "m")
        assert len(daemon.operate.fanout.subscribers) == 1
        lines.close()  # the reader goes away: the next keepalive finds the socket closed

        async def subscribers():
            for _ in range(200):
                if not daemon.operate.fanout.subscribers:
                    return 0
                await asyncio.sleep(0.01)
            return len(daemon.operate.fanout.subscribers)

        assert served.run(subscribers()) == 0, "a vanished reader is unsubscribed"


# ------------------------------------------------------------------------------------------ points, alarm actions

def test_points_give_value_quality_age_range_and_limits_of_every_tag(tmp_path: Path):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.sinks["plc-a"].write(np.array([0]), np.array([4.25]))
    daemon.sinks["plc-b"].set_quality(np.array([0]), int(Quality.COMM_FAILURE))
    points = {item["tag"]: item for item in daemon.operate.points({}, None)}

    assert list(points) == ["LT101", "PT101", "FT201"]
    level = points["LT101"]
    assert (level["value"], level["quality"], level["quality_name"], level["unit"], level["range"]) == \
        (4.25, 0, "GOOD", "m", [0.0, 10.0])
    assert level["limits"] == {"HH": 9.5, "H": 9.0} and 0 <= level["age"] < 5
    assert (points["PT101"]["value"], points["PT101"]["quality_name"], points["PT101"]["range"]) == \
        (None, "NO_VALUE", None)
    assert points["FT201"]["quality_name"] == "COMM_FAILURE" and points["FT201"]["device"] == "plc-b"


def test_alarm_actions_name_who_shelved_until_when_and_forget_it_on_unshelve(tmp_path: Path):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.sinks["plc-a"].write(np.array([0, 1]), np.array([9.8, 1.5]))
    daemon.scanner.tick()
    operate_on = daemon.operate
    events = daemon.engine.act("shelve", "LT101.H", "alice", "level transmitter recalibrated", duration=600.0)
    operate_on.on_commit(daemon.table, None, None, [dataclasses.replace(event, data={**event.data, "account": "alice"})
                                                    for event in events])
    shelved = operate_on.alarm_actions({}, None)["LT101.H"]
    assert (shelved["action"], shelved["by"]) == ("shelve", "alice")
    assert shelved["reason"] == "level transmitter recalibrated"
    assert shelved["until"] == pytest.approx(time.time() + 600.0, abs=5)
    operate_on.on_commit(daemon.table, None, None, daemon.engine.act("unshelve", "LT101.H", "bob"))
    assert "LT101.H" not in operate_on.alarm_actions({}, None)


def test_status_names_each_devices_last_error_and_the_flood_state(tmp_path: Path):
    daemon = fake_daemon(tmp_path, config(tmp_path))
    daemon.reloader.digest = "ab" * 32
    down = Event("device_down", time.time() - 5, "plc-b", "plc-b down: connection refused", Priority.HIGH)
    daemon.operate.on_commit(daemon.table, None, None, [down])
    status = daemon.operate.status()
    devices = {device["name"]: device for device in status["devices"]}
    assert devices["plc-b"]["last_error"] == "plc-b down: connection refused"
    assert devices["plc-b"]["last_error_at"] == down.ts and devices["plc-a"]["last_error"] is None
    assert status["alarms"]["flood"] is False and status["alarms"]["per_10min"] == 0
