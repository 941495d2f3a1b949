"""report: every_read stores every completed read exactly once, at its read time, and nothing else:
no deadband, no max_interval repeats; a tag in report: exception next to it is unaffected."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scanplant import WALL_OFFSET, FakeClock, Outbox, plant, positions
from test_operate import CONFIG as OPERATE_CONFIG
from test_operate import config, edited, fake_daemon

from gatewayd.values.readlog import ReadLog
from gatewayd.config.diff import diff_configs
from core.types import Quality
from tests.uplinkschemas import event_problems

CONFIG = """\
gateway: {id: GW-ER-01, state_dir: state, runtime_dir: run}
devices:
  - name: plc
    driver: modbus_tcp
    host: 10.0.0.5
    poll_interval: 1s
    report: every_read
    tags:
      - {name: FT101, address: 0, type: float32}
      - {name: FT102, address: 2, type: float32, report: exception, deadband: 1, max_interval: 10s,
         stale_after: 1h}
uplink: {host: platform.example.org, signing_key: /etc/gatewayd/signing.key}
"""

GOOD = int(Quality.GOOD)


def test_two_reads_between_two_ticks_are_both_stored_once_at_their_read_times(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    first = clock.monotonic()
    site.sink.write(positions(0, 1), np.array([5.0, 50.0]), read_at=first)
    clock.advance(0.4)
    second = clock.monotonic()
    site.sink.write(positions(0, 1), np.array([5.0, 50.5]), read_at=second)  # unchanged: stored all the same
    clock.advance(0.1)
    site.scanner.tick()
    assert site.outbox.of("FT101") == [("FT101", first + WALL_OFFSET, 5.0, GOOD),
                                       ("FT101", second + WALL_OFFSET, 5.0, GOOD)]
    assert site.outbox.of("FT102") == [("FT102", second + WALL_OFFSET, 50.5, GOOD)], "exception: the table's latest"
    site.outbox.samples.clear()
    site.scanner.tick()
    clock.advance(11.0)
    site.sink.write(positions(1), np.array([50.6]), read_at=clock.monotonic())  # within FT102's deadband
    site.scanner.tick()
    assert site.outbox.of("FT101") == [("FT101", second + 3.0 + WALL_OFFSET, 5.0, int(Quality.STALE))], \
        "no scan-timer repeats: only the quality change when it went stale"
    assert site.outbox.of("FT102") == [("FT102", clock.time(), 50.6, GOOD)], "its heartbeat, at its latest read"


def test_two_reads_of_a_row_in_one_write_are_both_stored(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)  # an OPC UA driver flushes every notification it holds in one write
    read = clock.monotonic()
    site.sink.write(positions(0, 0), np.array([5.0, 6.0]), np.array([GOOD, int(Quality.UNCERTAIN)]),
                    read_at=np.array([read - 0.2, read]))
    site.scanner.tick()
    assert site.outbox.of("FT101") == [("FT101", read - 0.2 + WALL_OFFSET, 5.0, GOOD),
                                       ("FT101", read + WALL_OFFSET, 6.0, int(Quality.UNCERTAIN))]


def test_a_quality_change_is_stored_once_and_retries_are_not_reads(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.sink.write(positions(0), np.array([5.0]))
    site.scanner.tick()
    site.outbox.samples.clear()
    for _ in range(5):  # the driver marks the rows at every failed reconnect
        clock.advance(0.5)
        site.sink.set_quality(positions(0, 1), int(Quality.COMM_FAILURE))
    site.scanner.tick()
    down = site.outbox.of("FT101")
    assert len(down) == 1 and down[0][3] == int(Quality.COMM_FAILURE) and math.isnan(down[0][2])
    assert down[0][1] == clock.time() - 2.0, "the time the quality changed"


def test_stale_is_stored_once_for_an_every_read_tag(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    read = clock.monotonic()
    site.sink.write(positions(0), np.array([5.0]), read_at=read)
    site.scanner.tick()
    for _ in range(3):
        clock.advance(2.0)
        site.scanner.tick()
    assert site.outbox.of("FT101") == [("FT101", read + WALL_OFFSET, 5.0, GOOD),
                                       ("FT101", read + 3.0 + WALL_OFFSET, 5.0, int(Quality.STALE))]


def test_a_full_read_log_drops_the_oldest_and_says_so_in_a_gap_event(tmp_path: Path, clock: FakeClock):
    site = plant(tmp_path, CONFIG)
    site.table.read_log = ReadLog(limit=3)
    stamps = []
    for _ in range(5):
        stamps.append(clock.time())
        site.sink.write(positions(0), np.array([1.0]))
        clock.advance(0.1)
    site.scanner.tick()
    assert [sample[1] for sample in site.outbox.of("FT101")] == stamps[2:]
    (gap,) = [event for event in site.outbox.events if event.kind == "gap"]
    assert site.scanner.stats.reads_dropped == 2
    assert gap.data["samples"] == 2 and gap.data["tags"] == {"FT101": [2, round(stamps[0] * 1000),
                                                                          round(stamps[1] * 1000)]}
    assert event_problems([gap]) == []


def test_a_table_without_every_read_tags_keeps_no_log(tmp_path: Path):
    site = plant(tmp_path, CONFIG.replace("    report: every_read\n", ""))
    assert site.table.read_log is None


def test_reads_waiting_at_a_reload_are_stored_by_the_outgoing_scanner(tmp_path: Path, clock: FakeClock):
    source = edited(OPERATE_CONFIG, "    host: 10.0.0.5\n", "    host: 10.0.0.5\n    report: every_read\n")
    old_config = config(tmp_path, source)
    daemon = fake_daemon(tmp_path, old_config)
    names = {int(tag_id): tag.name for tag_id, tag in zip(daemon.scanner.tag_ids, daemon.table.tags)}
    daemon.scanner.outbox = outbox = Outbox(names)
    first = clock.monotonic()
    daemon.sinks["plc-a"].write(np.array([1]), np.array([1.5]), read_at=first)
    daemon.sinks["plc-a"].write(np.array([1]), np.array([1.5]), read_at=first + 0.02)
    new_config = config(tmp_path, edited(source, "        address: 2\n        type: float32\n",
                                         "        address: 2\n        type: float32\n"
                                         "      - {name: PT102, address: 4, type: float32}\n"))
    diff = diff_configs(old_config, new_config)
    plan = daemon.reloader.build(new_config, "ab" * 32, diff, "test")
    daemon._adopt_points(new_config, diff, plan.points)
    assert outbox.of("PT101") == [("PT101", first + WALL_OFFSET, 1.5, GOOD),
                                  ("PT101", first + 0.02 + WALL_OFFSET, 1.5, GOOD)]
    assert daemon.table.read_log is not None and len(daemon.table.read_log) == 0


def test_the_read_log_holds_copies_of_whole_and_partly_kept_writes(tmp_path: Path, clock: FakeClock):
    """A write of every_read rows only is logged whole (no mask), one with an exception row beside them
    only for the every_read row; either way the log keeps its own copies of what was written."""
    site = plant(tmp_path, CONFIG)
    table = site.scanner.table
    row = table.rows["FT101"]
    values, quality, source_ts = np.array([7.0]), np.array([GOOD], dtype=np.uint8), np.array([123.0])
    site.sink.write(positions(0), values, quality, source_ts, read_at=clock.monotonic())
    values[0], quality[0], source_ts[0] = -1.0, 99, -1.0  # the writer reuses its arrays
    clock.advance(0.2)
    site.sink.write(positions(0, 1), np.array([8.0, 80.0]), int(Quality.OUT_OF_RANGE), 456.0,
                    read_at=clock.monotonic())
    reads = table.read_log.take()
    assert reads.rows.tolist() == [row, row]
    assert reads.value.tolist() == [7.0, 8.0]
    assert reads.quality.tolist() == [GOOD, int(Quality.OUT_OF_RANGE)]
    assert reads.source_ts.tolist() == [123.0, 456.0]
    assert reads.gateway_ts.tolist() == [clock.monotonic() - 0.2 + WALL_OFFSET, clock.monotonic() + WALL_OFFSET]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans(), st.booleans()), max_size=8),
       st.integers(1, 12))
def test_the_log_gives_each_write_expanded_in_order_and_drops_the_oldest_past_its_limit(writes, limit):
    """Scalars stand for every row of their write until the scan takes the log; past the limit whole writes go,
    oldest first, and what went is counted per row with its first and last gateway time."""
    log, expected, dropped = ReadLog(limit=limit), [], {}
    for k, (count, array_quality, array_source, array_stamp) in enumerate(writes):
        rows = np.arange(count) + 10 * k
        value = rows * 0.5
        quality = np.full(count, k % 3, np.uint8) if array_quality else k % 3
        source_ts = np.arange(count) + 100.0 * k if array_source else np.nan
        stamp = np.arange(count) + 1000.0 * k if array_stamp else 1000.0 * k
        log.add(rows, value, quality, source_ts, stamp)
        columns = (rows, value, quality, source_ts, stamp)
        expected.append([np.broadcast_to(column, count).tolist() for column in columns])
        while sum(len(write[0]) for write in expected) > limit:
            gone = expected.pop(0)
            for row, ts in zip(gone[0], gone[4]):
                entry = dropped.setdefault(row, [0, ts, ts])
                entry[0] += 1
                entry[1], entry[2] = min(entry[1], ts), max(entry[2], ts)
    reads = log.take()
    waiting = [sum((write[i] for write in expected), []) for i in range(5)]
    if not waiting[0]:
        assert reads is None or len(reads) == 0
    else:
        got = [reads.rows, reads.value, reads.quality, reads.source_ts, reads.gateway_ts]
        assert [column.tolist() for column in got[:3]] == waiting[:3]
        assert np.array_equal(got[3], waiting[3], equal_nan=True) and got[4].tolist() == waiting[4]
    assert log.take_dropped() == dropped and len(log) == 0 and log.take() is None
