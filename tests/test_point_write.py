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
