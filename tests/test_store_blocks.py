"""store.blocks: a block's bytes give back exactly the samples packed, bad bytes are refused, and the daemon's
blocks fit its batches."""

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gatewayd.assembly import open_store
from gatewayd.config import parse_config
from store.blocks import BlockError, count, pack, split, unpack
from store.records import SampleBlock

floats = st.floats(allow_nan=True, allow_infinity=True)


def block_of(rows) -> SampleBlock:
    return SampleBlock(*zip(*rows)) if rows else SampleBlock.empty()


def same(a: SampleBlock, b: SampleBlock) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name), equal_nan=name != "tag_id")
               for name in ("tag_id", "ts", "value", "quality", "source_ts"))


def pack_version_1(block: SampleBlock) -> bytes:
    """What gatewayd wrote before version 2, from the layout in store.blocks' docstring."""
    columns = [block.tag_id.astype("<i8"), block.ts.astype("<f8"), block.value.astype("<f8"),
               block.source_ts.astype("<f8"), block.quality.astype("u1")]
    return struct.pack("<BI", 1, len(block)) + b"".join(column.tobytes() for column in columns)


ids = st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2**32 - 1, 2**32, -1, -2**63, 2**63 - 1])


@given(st.lists(st.tuples(ids, floats, floats, st.integers(0, 255), floats | st.just(np.nan)), max_size=50))
def test_round_trip_keeps_every_column_bit_for_bit(rows):
    block = block_of(rows)
    body = pack(block)
    narrow = all(0 <= row[0] < 2**32 for row in rows)
    timed = any(not np.isnan(row[4]) for row in rows)
    expected = 6 + len(rows) * (29 if timed else 21) if narrow else 5 + len(rows) * 33
    assert (body[0], len(body)) == ((2 if narrow else 1), expected)
    assert count(body) == len(rows)
    for back in (unpack(body), unpack(pack_version_1(block))):
        assert same(back, block)
        assert back.value.view(np.uint64).tolist() == block.value.view(np.uint64).tolist()  # NaN payloads too


def test_a_block_without_device_times_leaves_their_column_out():
    modbus = block_of([(7, 2.0, 3.0, 0, np.nan)] * 1000)
    timed = block_of([(7, 2.0, 3.0, 0, np.nan)] * 999 + [(7, 2.0, 3.0, 0, 1.5)])
    assert len(pack(modbus)) == 6 + 21 * 1000 and pack(modbus)[5] == 0
    assert len(pack(timed)) == 6 + 29 * 1000 and pack(timed)[5] == 1
    assert np.isnan(unpack(pack(modbus)).source_ts).all() and unpack(pack(timed)).source_ts[-1] == 1.5


def test_refuses_a_newer_version_a_short_header_unknown_flags_and_a_wrong_length():
    body = pack(block_of([(1, 2.0, 3.0, 0, np.nan)]))
    with pytest.raises(BlockError, match="version 3"):
        unpack(bytes([3]) + body[1:])
    with pytest.raises(BlockError, match="no header"):
        unpack(body[:4])
    with pytest.raises(BlockError, match="no flags"):
        unpack(body[:5])
    with pytest.raises(BlockError, match="flags 0x02"):
        unpack(body[:5] + b"\x02" + body[6:])
    with pytest.raises(BlockError, match="takes 27 bytes, not 26"):
        unpack(body[:-1])
    with pytest.raises(BlockError, match="not 28"):
        unpack(body + b"\0")
    old = pack_version_1(block_of([(1, 2.0, 3.0, 0, np.nan)]))
    with pytest.raises(BlockError, match="takes 38 bytes, not 37"):
        unpack(old[:-1])


@pytest.mark.parametrize("length, size, expected", [(0, 3, []), (3, 3, [3]), (4, 3, [3, 1]), (7, 3, [3, 3, 1]),
                                                    (1, 1, [1]), (2, 1, [1, 1])])
def test_split_keeps_order_at_the_size_boundaries(length, size, expected):
    block = block_of([(k, float(k), float(k), k % 256, np.nan) for k in range(length)])
    parts = split(block, size)
    assert [len(part) for part in parts] == expected
    assert same(SampleBlock.concat(parts) if parts else SampleBlock.empty(), block)


def test_split_refuses_a_size_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        split(SampleBlock.empty(), 0)


@pytest.mark.parametrize("batch_max_rows, expected", [(5000, 1000), (1000, 1000), (999, 999), (1, 1)])
def test_the_daemons_blocks_are_no_larger_than_its_batches(tmp_path, batch_max_rows, expected):
    """A batch carries whole blocks: the daemon's store cuts ticks into blocks of at most batch_max_rows."""
    source = (Path(__file__).parent / "configs" / "good" / "minimal.yaml").read_text()
    source = source.replace("gateway:\n", f"gateway:\n  state_dir: {tmp_path}\n", 1)
    source = source.replace("uplink:\n", f"uplink:\n  batch_max_rows: {batch_max_rows}\n", 1)
    store = open_store(parse_config(source, tmp_path / "c.yaml"))
    try:
        assert store.block_samples == expected
        store.append(SampleBlock(np.arange(2500), np.ones(2500), np.zeros(2500), np.zeros(2500), np.ones(2500)), [])
        sizes = [rows for (rows,) in store._conn.execute("SELECT rows FROM outbox ORDER BY id")]
        assert sum(sizes) == 2500 and max(sizes) == min(expected, 2500)
    finally:
        store.close()
