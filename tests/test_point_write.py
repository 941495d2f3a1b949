"""A write into the point table: the values, qualities, read counts and read times of its rows, however
the driver hands them over (one quality code or one per row, one read time or one per row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scanplant import WALL_OFFSET, FakeClock, plant, positions

from core.types import Quality

CONFIG = """\
gateway: {id: GW-PW-01, state_dir: state, runtime_dir: run}
devices:
  - name: plc
    driver: modbus_tcp
    host: 10.0.0.5
    tags:
      - {name: A, address: 0, type: uint16}
      - {name: B, address: 1, type: uint16}
      - {name: C, address: 2, type: uint16}
uplink: {host: platform.example.org, signing_key: /etc/gatewayd/signing.key}
"""


@pytest.mark.parametrize("read_at", [95.25, np.float64(95.25), np.array([95.25, 95.25])])
def test_one_read_time_or_one_per_row_stamps_the_same(tmp_path: Path, clock: FakeClock, read_at):
    site = plant(tmp_path, CONFIG)
    clock.advance(1.0)
    clock.step_wall(3.0)  # the wall clock stepped since the read: the read's age counts, not the wall
    site.sink.write(positions(0, 2), np.array([1.0, 3.0]), read_at=read_at)
    table = site.table
    assert table.updated[[0, 2]].tolist() == [95.25, 95.25]
    assert table.gateway_ts[[0, 2]].tolist() == [95.25 + WALL_OFFSET + 3.0] * 2


@pytest.mark.parametrize("quality, reads", [
    (int(Quality.GOOD), [1, 1]),
    (np.uint8(Quality.GOOD), [1, 1]),
    (Quality.STALE, [1, 1]),  # uncertain, not bad
    (Quality.OUT_OF_RANGE, [0, 0]),
    (int(Quality.COMM_FAILURE), [0, 0]),
    (np.array([Quality.GOOD, Quality.DECODE_ERROR], dtype=np.uint8), [1, 0]),
])
def test_a_quality_that_is_not_bad_counts_a_read(tmp_path: Path, clock: FakeClock, quality, reads):
    site = plant(tmp_path, CONFIG)
    site.sink.write(positions(0, 1), np.array([1.0, 2.0]), quality)
    assert site.table.reads[[0, 1]].tolist() == reads
    assert site.table.quality[[0, 1]].tolist() == np.broadcast_to(np.asarray(quality), 2).tolist()


def test_a_table_of_every_read_rows_only_logs_copies_of_whole_writes(tmp_path: Path, clock: FakeClock):
    """Every row every_read: no mask is made, and the log still keeps its own copies of rows and values."""
    site = plant(tmp_path, CONFIG.replace("type: uint16}", "type: uint16, report: every_read}"))
    rows, values = positions(0, 2), np.array([1.0, 3.0])
    site.sink.write(rows, values, read_at=95.25)
    values[:] = -1.0  # the writer reuses its arrays
    site.sink.write(positions(1), np.array([2.0]), int(Quality.OUT_OF_RANGE), 7.0, read_at=96.0)
    reads = site.table.read_log.take()
    assert reads.rows.tolist() == [0, 2, 1] and reads.value.tolist() == [1.0, 3.0, 2.0]
    assert reads.quality.tolist() == [Quality.GOOD, Quality.GOOD, Quality.OUT_OF_RANGE]
    assert np.isnan(reads.source_ts[:2]).all() and reads.source_ts[2] == 7.0
    assert reads.gateway_ts.tolist() == [95.25 + WALL_OFFSET] * 2 + [96.0 + WALL_OFFSET]
