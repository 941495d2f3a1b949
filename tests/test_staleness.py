"""Staleness is a quality: a tag not refreshed within stale_after turns STALE at once (value kept), a
device declared down makes it COMM_FAILURE (value null), and a fresh read or confirmation clears it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scanplant import WALL_OFFSET, FakeClock, plant, positions

from gatewayd.config import parse_config
from core.types import Quality

CONFIG = """\
gateway: {id: GW-ST-01, state_dir: state, runtime_dir: run}
devices:
  - name: plc
    driver: modbus_tcp
    host: 10.0.0.5
    poll_interval: 1s
    tags:
      - {name: PT101, address: 0, type: float32}
      - {name: PT102, address: 2, type: float32, stale_after: 10s}
  - name: dcs
    driver: opcua
    endpoint: opc.tcp://10.0.0.7:4840
    security_policy: None
    publishing_interval: 500ms
    keepalive_count: 4
    tags:
      - {name: TT201, node: ns=2;s=TT201}
uplink: {host: platform.example.org, signing_key: /etc/gatewayd/signing.key}
rules:
  units: {farm: {max_bypassed: 1}}
  interlocks:
    - {id: SIS-1, unit: farm, bypass: PT102, protects: [PT101], max_bypass: 8h}
"""

GOOD, STALE, COMM_FAILURE = int(Quality.GOOD), int(Quality.STALE), int(Quality.COMM_FAILURE)


def test_a_tag_turns_stale_just_after_stale_after_stamped_when_it_became_stale(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    read = clock.monotonic()
    site.sink.write(positions(0, 1), np.array([4.5, 7.0]), read_at=read)
    site.scanner.tick()
    site.outbox.samples.clear()
    clock.advance(3.0)  # exactly three poll intervals: not yet
    site.scanner.tick()
    assert site.table.quality[site.row("PT101")] == GOOD and site.outbox.samples == []
    assert site.table.stale_due == read + 3.0, "the scan loop is woken at the next deadline"
    clock.advance(0.001)
    site.scanner.tick()
    assert site.outbox.samples == [("PT101", read + 3.0 + WALL_OFFSET, 4.5, STALE)], "value kept, time of the deadline"
    assert site.scanner.stats.stale == 1
    assert site.table.quality[site.row("PT102")] == GOOD, "its own stale_after is 10 s"


def test_the_last_scan_at_a_stop_judges_staleness_at_the_moment_the_stop_began(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(positions(0, 1), np.array([4.5, 7.0]), read_at=clock.monotonic())
    site.scanner.tick()
    site.outbox.samples.clear()
    stopping_at = clock.monotonic() + 2.0  # the stop begins in time; stopping the drivers takes longer
    clock.advance(5.0)
    site.scanner.tick(stale_as_of=stopping_at)
    assert site.table.quality[site.row("PT101")] == GOOD and site.outbox.samples == []


def test_a_fresh_read_clears_stale_and_down_makes_comm_failure_with_a_null_value(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(positions(0), np.array([4.5]))
    clock.advance(3.5)
    site.scanner.tick()
    site.outbox.samples.clear()
    clock.advance(0.5)
    site.sink.write(positions(0), np.array([4.6]), read_at=clock.monotonic() - 0.2)
    site.scanner.tick()
    assert site.outbox.samples == [("PT101", clock.time() - 0.2, 4.6, GOOD)]
    site.outbox.samples.clear()
    clock.advance(4.0)
    site.scanner.tick()  # stale again
    site.sink.set_quality(positions(0, 1), COMM_FAILURE)  # the driver declares the device down
    site.scanner.tick()
    down = {name: (ts, quality, value) for name, ts, value, quality in site.outbox.samples}
    assert down["PT101"][:2] == (clock.time(), COMM_FAILURE) and math.isnan(down["PT101"][2])
    assert down["PT102"][:2] == (clock.time(), COMM_FAILURE) and math.isnan(down["PT102"][2])
    assert site.table.value[site.row("PT101")] == 4.6, "the table keeps the last value; only the wire says null"


def test_a_bad_quality_is_sent_null_also_on_a_heartbeat_and_an_uncertain_one_keeps_its_value(
        tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    qualities = np.array([int(Quality.OUT_OF_RANGE), int(Quality.UNCERTAIN)])
    site.sink.write(positions(0, 1), np.array([99.0, 5.0]), qualities)
    site.scanner.tick()
    sent = {name: (value, quality) for name, _, value, quality in site.outbox.samples}
    assert math.isnan(sent["PT101"][0]) and sent["PT101"][1] == int(Quality.OUT_OF_RANGE)
    assert sent["PT102"] == (5.0, int(Quality.UNCERTAIN))
    site.outbox.samples.clear()
    for _ in range(61):  # the default max_interval of 60 s, reads every second
        clock.advance(1.0)
        site.sink.write(positions(0, 1), np.array([99.0, 5.0]), qualities)
        site.scanner.tick()
    heartbeat = site.outbox.of("PT101")
    assert len(heartbeat) == 1 and math.isnan(heartbeat[0][2])


def test_the_rules_see_stale(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    seen = []
    evaluate = site.scanner.engine.evaluate

    def watched(value, quality, *rest):
        seen.append(quality.copy())
        return evaluate(value, quality, *rest)

    site.scanner.engine.evaluate = watched
    site.sink.write(positions(0), np.array([1.0]))
    clock.advance(3.5)
    site.scanner.tick()
    assert seen[-1][site.row("PT101")] == STALE


def test_interlock_rows_are_never_stale_checked(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(positions(0, 1), np.array([1.0, 0.0]))
    site.scanner.tick()
    row = site.row("IL.SIS-1")
    assert site.table.stale_after[row] == math.inf and site.table.quality[row] == GOOD
    clock.advance(3600.0)
    site.sinks["plc"].write(positions(0, 1), np.array([1.0, 0.0]))
    site.scanner.tick()
    assert site.table.quality[row] == GOOD, "its quality follows its inputs, written by the scan"


def test_an_opc_ua_publish_confirms_values_and_clears_stale_but_not_comm_failure(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    opcua = site.sinks["dcs"]
    row = site.row("TT201")
    assert site.table.stale_after[row] == 2.5, "(keepalive_count + 1) publishing intervals"
    opcua.write(positions(0), np.array([80.0]), np.array([int(Quality.UNCERTAIN)]))
    clock.advance(2.0)
    opcua.confirm(positions(0), clock.monotonic())  # a keep-alive
    clock.advance(2.0)
    site.scanner.tick()
    assert site.table.quality[row] == int(Quality.UNCERTAIN), "confirmed 2 s ago: not stale"
    clock.advance(1.0)
    site.scanner.tick()
    assert site.table.quality[row] == STALE
    opcua.confirm(positions(0), clock.monotonic())
    assert site.table.quality[row] == int(Quality.UNCERTAIN), "the quality it had before going stale"
    later = clock.monotonic() + 0.5
    opcua.write(positions(0), np.array([81.0]), read_at=later)
    opcua.confirm(positions(0), clock.monotonic())
    assert site.table.updated[row] == later, "a confirmation never takes a read time back"
    opcua.set_quality(positions(0), COMM_FAILURE)
    opcua.confirm(positions(0), clock.monotonic() + 1.0)
    assert site.table.quality[row] == COMM_FAILURE, "a bad row waits for a real value"


def test_a_slower_granted_subscription_widens_stale_after_but_never_below_the_configured(tmp_path: Path,
                                                                                         clock: FakeClock):
    """The OPC UA driver widens a subscribed tag's stale_after to what the server granted; a later
    session granting the configured rates gives the configured stale_after back."""
    site = plant(tmp_path, CONFIG)
    opcua = site.sinks["dcs"]
    row = site.row("TT201")
    opcua.widen_stale_after(positions(0), 10.0)  # granted 2 s x 4 + 2 s
    opcua.write(positions(0), np.array([80.0]), read_at=clock.monotonic())
    clock.advance(10.0)
    site.scanner.tick()
    assert site.table.quality[row] == GOOD, "10 s since its read: not yet stale"
    clock.advance(0.001)
    site.scanner.tick()
    assert site.table.quality[row] == STALE
    opcua.widen_stale_after(positions(0), 1.0)  # shorter than configured: the configured 2.5 s holds
    assert site.table.stale_after[row] == 2.5
    assert site.table.stale_after[site.row("PT101")] == 3.0, "other devices' rows untouched"

RTU_AND_GDS = """\
gateway: {id: GW-ST-02}
devices:
  - name: bus
    driver: modbus_rtu
    port: /dev/ttyUSB0
    poll_interval: 2s
    slaves:
      - unit_id: 1
        poll_interval: 5s
        tags: [{name: FT1, address: 0}]
      - unit_id: 2
        tags: [{name: FT2, address: 0}, {name: FT3, address: 1, stale_after: 1m}]
  - name: panel
    driver: gds
    profile: generic
    transport: tcp
    host: 10.0.0.9
    poll_interval: 500ms
    stale_after: 4s
    channels:
      - {name: GD1, channel: 1, gas: H2S, unit: ppm}
      - {name: GD2, channel: 2, gas: CH4, unit: "%LEL", stale_after: 9s}
  - name: dcs
    driver: opcua
    endpoint: opc.tcp://10.0.0.7:4840
    security_policy: None
    poll_interval: 2s
    tags:
      - {name: TT1, node: ns=2;s=TT1}
      - {name: TT2, node: ns=2;s=TT2, mode: poll}
uplink: {host: broker, signing_key: k}
"""




@pytest.mark.parametrize("tag, stale_after", [
    ("FT1", 15.0), ("FT2", 6.0), ("FT3", 60.0),  # three of the slave's poll intervals, else the bus's; own
    ("GD1", 4.0), ("GD1.alarm", 4.0), ("GD2", 9.0), ("GD2.fault", 9.0),  # device's; channel's, generated tags too
    ("TT1", 2.0), ("TT2", 6.0),  # (3 + 1) default publishing intervals of 0.5 s; polled: three poll intervals
])
def test_stale_after_defaults_and_overrides(tmp_path: Path, tag: str, stale_after: float):
    config = parse_config(RTU_AND_GDS, tmp_path / "config.yaml")
    assert {t.name: t.stale_after for t in config.tags}[tag] == stale_after
