"""Request planning: examples first, then properties over random register maps.

The optimality checks compare against a brute-force dynamic programme over the sorted tags, written
independently of the planner's greedy merge.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.config import (
    ADDRESS_SPACE, BIT_TABLES, MAX_READ_BITS, MAX_READ_REGISTERS, REGISTER_TYPES, ModbusAddress,
)
from drivers.modbus.plan import Block, plan_blocks


def H(address: int, dtype: str = "uint16", bit: int | None = None) -> ModbusAddress:
    return ModbusAddress("holding", address, dtype, bit)


def shape(blocks: list[Block]) -> list[tuple[str, int, int, tuple[tuple[int, int], ...]]]:
    return [(block.table, block.start, block.count, block.members) for block in blocks]


EXAMPLES = [
    ("nothing to read", [], 10, 125, []),
    ("adjacent values share a read", [H(0, "float32"), H(2, "int16")], 0, 125,
     [("holding", 0, 3, ((0, 0), (1, 2)))]),
    ("a gap of exactly max_gap is bridged", [H(0), H(11)], 10, 125, [("holding", 0, 12, ((0, 0), (1, 11)))]),
    ("one more unused register splits", [H(0), H(12)], 10, 125,
     [("holding", 0, 1, ((0, 0),)), ("holding", 12, 1, ((1, 0),))]),
    ("input order does not matter, members keep input indexes", [H(5), H(0)], 10, 125,
     [("holding", 0, 6, ((1, 0), (0, 5)))]),
    ("bit tags sharing a register", [H(3, "bit", 0), H(3, "bit", 15)], 0, 125,
     [("holding", 3, 1, ((0, 0), (1, 0)))]),
    ("tables are never mixed", [ModbusAddress("input", 0, "uint16"), H(0)], 10, 125,
     [("holding", 0, 1, ((1, 0),)), ("input", 0, 1, ((0, 0),))]),
    ("the caller's max_block is honoured", [H(0), H(5), H(9)], 10, 8,
     [("holding", 0, 6, ((0, 0), (1, 5))), ("holding", 9, 1, ((2, 0),))]),
    ("max_block above the protocol limit is capped at 125", [H(0), H(125)], 200, 1000,
     [("holding", 0, 1, ((0, 0),)), ("holding", 125, 1, ((1, 0),))]),
    ("a float32 ending exactly at the limit fits", [H(0), H(123, "float32")], 200, 125,
     [("holding", 0, 125, ((0, 0), (1, 123)))]),
    ("a float32 across the limit starts a new block", [H(0), H(124, "float32")], 200, 125,
     [("holding", 0, 1, ((0, 0),)), ("holding", 124, 2, ((1, 0),))]),
    ("coil gaps are budgeted in registers of 16 bits", [ModbusAddress("coil", 0, "bool"),
                                                        ModbusAddress("coil", 33, "bool")], 2, 125,
     [("coil", 0, 34, ((0, 0), (1, 33)))]),
    ("coils ignore a register max_block and stop at 2000 bits",
     [ModbusAddress("coil", 0, "bool"), ModbusAddress("coil", 1999, "bool"), ModbusAddress("coil", 2000, "bool")],
     200, 10, [("coil", 0, 2000, ((0, 0), (1, 1999))), ("coil", 2000, 1, ((2, 0),))]),
]


@pytest.mark.parametrize("case, addresses, max_gap, max_block, expected", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_examples(case, addresses, max_gap, max_block, expected):
    assert shape(plan_blocks(addresses, max_gap, max_block)) == expected


def test_sixty_three_float32_need_two_reads():
    floats = [H(2 * i, "float32") for i in range(63)]  # 126 registers
    blocks = plan_blocks(floats, 0, MAX_READ_REGISTERS)
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 2)]


def test_a_tag_wider_than_max_block_is_rejected_with_its_address():
    with pytest.raises(ValueError, match="float64 at holding 7 needs 4 registers but a block may hold at most 3"):
        plan_blocks([H(7, "float64")], 10, 3)


def test_an_unlimited_gap_budget_bridges_gaps_but_not_limits():
    spread = [H(address) for address in (0, 100, 124, 125, 300)]
    assert len(plan_blocks(spread, 0, 125)) == 4  # 124 and 125 are adjacent
    assert len(plan_blocks(spread, ADDRESS_SPACE, 125)) == 3  # 0..124, 125..249, 300


# --- properties -------------------------------------------------------------------------------


gap_sizes = st.one_of(st.integers(0, 3), st.integers(0, 40), st.integers(0, 3000))
tag_steps = st.tuples(st.sampled_from(sorted(REGISTER_TYPES)), gap_sizes, st.booleans())


@st.composite
def register_maps(draw) -> list[ModbusAddress]:
    """Valid tag lists as config would accept them: no overlaps, except bit tags sharing a register."""
    tags: list[ModbusAddress] = []
    for table in draw(st.lists(st.sampled_from(["holding", "input", "coil", "discrete"]), max_size=3, unique=True)):
        address = draw(st.integers(0, 200))
        for dtype, gap, second_bit in draw(st.lists(tag_steps, min_size=1, max_size=40)):
            if table in BIT_TABLES:
                tag = ModbusAddress(table, address, "bool")
            else:
                tag = ModbusAddress(table, address, dtype, 0 if dtype == "bit" else None)
                if dtype == "bit" and second_bit:  # another bit of the same register
                    tags.append(ModbusAddress(table, address, "bit", 1))
            if tag.end > ADDRESS_SPACE:
                break
            tags.append(tag)
            address = tag.end + gap
    return draw(st.permutations(tags))


gaps = st.integers(0, 40)
limits = st.integers(4, 200)  # 4 fits a float64; above 125 exercises the protocol cap


def register_units(table: str, max_gap: int) -> int:
    return max_gap * 16 if table in BIT_TABLES else max_gap


def protocol_limit(table: str, max_block: int) -> int:
    return MAX_READ_BITS if table in BIT_TABLES else min(max_block, MAX_READ_REGISTERS)


@settings(max_examples=200)
@given(register_maps(), gaps, limits)
def test_every_tag_is_read_exactly_once_and_whole(addresses, max_gap, max_block):
    blocks = plan_blocks(addresses, max_gap, max_block)
    covered = [index for block in blocks for index, _ in block.members]
    assert sorted(covered) == list(range(len(addresses)))
    for block in blocks:
        for index, offset in block.members:
            tag = addresses[index]
            assert tag.table == block.table
            assert block.start <= tag.address and tag.end <= block.end
            assert offset == tag.address - block.start


@settings(max_examples=200)
@given(register_maps(), gaps, limits)
def test_blocks_respect_limits_gaps_and_do_not_overlap(addresses, max_gap, max_block):
    blocks = plan_blocks(addresses, max_gap, max_block)
    for block in blocks:
        assert 1 <= block.count <= protocol_limit(block.table, max_block)
        assert block.count <= (MAX_READ_BITS if block.table in BIT_TABLES else max_block)
        spans = sorted((addresses[i].address, addresses[i].end) for i, _ in block.members)
        assert spans[0][0] == block.start and max(end for _, end in spans) == block.end  # no wasted edges
        reached = spans[0][1]
        for start, end in spans[1:]:
            assert start - reached <= register_units(block.table, max_gap)
            reached = max(reached, end)
    for table in {block.table for block in blocks}:
        ranges = sorted((b.start, b.end) for b in blocks if b.table == table)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(ranges, ranges[1:]))


def fewest_reads(addresses: list[ModbusAddress], max_gap: int | None, max_block: int) -> int:
    """Brute force: the fewest runs of consecutive sorted tags, each run a valid read."""
    total = 0
    for table in {tag.table for tag in addresses}:
        tags = sorted((tag for tag in addresses if tag.table == table), key=lambda t: (t.address, t.end))
        limit = protocol_limit(table, max_block)
        best = [0] + [len(tags) + 1] * len(tags)
        for j in range(1, len(tags) + 1):
            for i in range(j):
                run = tags[i:j]
                span = max(t.end for t in run) - run[0].address
                gap_ok = max_gap is None or all(
                    b.address - max(t.end for t in run[:k + 1]) <= register_units(table, max_gap)
                    for k, b in enumerate(run[1:]))
                if span <= limit and gap_ok:
                    best[j] = min(best[j], best[i] + 1)
        total += best[-1]
    return total


@settings(max_examples=100)
@given(register_maps(), gaps, limits)
def test_the_plan_is_the_fewest_reads_for_its_gap_budget(addresses, max_gap, max_block):
    assert len(plan_blocks(addresses, max_gap, max_block)) == fewest_reads(addresses, max_gap, max_block)


@settings(max_examples=100)
@given(register_maps(), limits)
def test_unlimited_gap_budget_reaches_the_fewest_reads(addresses, max_block):
    assert len(plan_blocks(addresses, ADDRESS_SPACE, max_block)) == fewest_reads(addresses, None, max_block)
