"""Read time, not write or scan time: the point table stamps each value with the time its answer arrived,
and report-by-exception re-reports an unchanged value with the time of its latest read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scanplant import WALL_OFFSET, FakeClock, plant

from core.types import Quality

CONFIG = """\
gateway: {id: GW-RT-01, state_dir: state, runtime_dir: run}
devices:
  - name: plc
    driver: modbus_tcp
    host: 10.0.0.5
    poll_interval: 1s
    stale_after: 1h
    tags:
      - {name: PT101, address: 0, type: float32, deadband: 0.5, max_interval: 5s}
      - {name: PT102, address: 2, type: float32, max_interval: 5s}
uplink: {host: platform.example.org, signing_key: /etc/gatewayd/signing.key}
"""


def test_a_write_is_stamped_with_the_time_its_answer_arrived(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    answered = clock.monotonic()
    clock.advance(4.1)  # the rest of a slow poll
    site.sink.write(np.array([0, 1]), np.array([1.0, 2.0]), read_at=np.array([answered, answered + 3.0]))
    rows = site.table.rows_of(["PT101", "PT102"])
    np.testing.assert_array_equal(site.table.updated[rows], [answered, answered + 3.0])
    np.testing.assert_array_equal(site.table.gateway_ts[rows], [answered + WALL_OFFSET, answered + 3.0 + WALL_OFFSET])


def test_a_wall_clock_step_between_read_and_write_is_measured_on_the_monotonic_clock(tmp_path: Path,
                                                                                      clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    answered = clock.monotonic()
    clock.advance(0.5)
    clock.step_wall(-3600.0)
    site.sink.write(np.array([0]), np.array([1.0]), read_at=answered)
    row = site.table.rows["PT101"]
    assert site.table.gateway_ts[row] == clock.time() - 0.5, "the read's age comes from the monotonic clock"


def test_without_read_at_the_write_is_stamped_now(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(np.array([0]), np.array([1.0]))
    site.sink.set_quality(np.array([1]), int(Quality.COMM_FAILURE), read_at=clock.monotonic() - 2.0)
    assert site.table.gateway_ts[site.table.rows["PT101"]] == clock.time()
    assert site.table.gateway_ts[site.table.rows["PT102"]] == clock.time() - 2.0


def test_a_heartbeat_re_report_carries_the_time_of_the_latest_read_not_the_scan_time(tmp_path: Path,
                                                                                       clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    first = clock.monotonic()
    site.sink.write(np.array([0, 1]), np.array([10.0, 20.0]), read_at=first)
    clock.advance(0.3)
    site.scanner.tick()
    assert [sample[:2] for sample in site.outbox.samples] == [("PT101", first + WALL_OFFSET),
                                                                    ("PT102", first + WALL_OFFSET)]
    site.outbox.samples.clear()
    clock.advance(2.0)
    latest = clock.monotonic()
    site.sink.write(np.array([0]), np.array([10.2]), read_at=latest)  # inside the deadband: not reported
    clock.advance(0.2)
    site.scanner.tick()
    assert site.outbox.samples == []
    clock.advance(3.0)  # 5 s since the last report: both are due
    site.scanner.tick()
    assert site.outbox.samples == [("PT101", latest + WALL_OFFSET, 10.2, 0)], \
        "PT101 re-reported with its latest read; PT102, not read since its last report, not repeated"
    site.outbox.samples.clear()
    clock.advance(0.5)
    again = clock.monotonic() - 0.1
    site.sink.write(np.array([1]), np.array([20.0]), read_at=again)
    site.scanner.tick()
    assert site.outbox.samples == [("PT102", again + WALL_OFFSET, 20.0, 0)], "due, and read anew"


def test_a_device_that_stays_down_is_re_reported_with_its_latest_attempt(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(np.array([0, 1]), np.array([10.0, 20.0]))
    site.scanner.tick()
    site.outbox.samples.clear()
    attempts = []
    for _ in range(12):  # the driver retries every second and marks the rows at each failure
        clock.advance(1.0)
        attempts.append(clock.time())
        site.sink.set_quality(np.array([0, 1]), int(Quality.COMM_FAILURE))
        site.scanner.tick()
    stamps = [ts for name, ts, _, quality in site.outbox.samples if name == "PT101"]
    assert stamps == [attempts[0], attempts[5], attempts[10]], "at once, then every max_interval (5 s)"
    assert all(quality == Quality.COMM_FAILURE for *_, quality in site.outbox.samples)


def test_a_tag_never_read_is_reported_once_with_no_value_at_the_time_the_table_was_made(tmp_path: Path,
                                                                                      clock: FakeClock):
    made = clock.time()
    site = plant(tmp_path, CONFIG)
    for _ in range(3):
        site.scanner.tick()
        clock.advance(10.0)
    assert [(name, ts, quality) for name, ts, _, quality in site.outbox.samples] == [
        ("PT101", made, int(Quality.NO_VALUE)), ("PT102", made, int(Quality.NO_VALUE))]
