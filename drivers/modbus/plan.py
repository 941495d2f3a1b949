"""Request planning: which block reads cover a device's tags in the fewest requests.

A request costs a round trip (milliseconds on a plant network, more through a serial gateway), while
reading a few unused registers costs only bytes, so neighbouring tags are merged into one read as long
as the block stays within the protocol limit and the unused registers between two consecutive tags
stay within the gap budget. Reading into unused registers is not free on every device (some answer
ILLEGAL ADDRESS for holes in their map), which is why the budget is the integrator's to set.

Sorting and merging greedily is optimal here: blocks are runs of consecutive tags in address order,
and any part of a valid run is itself valid, so extending each run as far as it goes never costs an
extra request.

    >>> blocks = plan_blocks([ModbusAddress("holding", 0, "float32"), ModbusAddress("holding", 4, "int16")],
    ...                      max_gap=10, max_block=125)
    >>> [(b.table, b.start, b.count, b.members) for b in blocks]
    [('holding', 0, 5, ((0, 0), (1, 4)))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.config import BIT_TABLES, MAX_READ_BITS, MAX_READ_REGISTERS, ModbusAddress

BITS_PER_REGISTER = 16


@dataclass(frozen=True)
class Block:
    """One read request: `count` registers (or bits) of `table` from `start`.

    `members` pairs each covered tag's index in the planner's input with its offset in the block,
    in address order, so a decoder can slice the response without searching.
    """

    table: str
    start: int
    count: int
    members: tuple[tuple[int, int], ...]

    @property
    def end(self) -> int:
        return self.start + self.count


def span_limit(table: str, max_block: int) -> int:
    """Largest block for a table: the caller's limit for registers, the protocol's for bits."""
    if table in BIT_TABLES:
        return MAX_READ_BITS
    return min(max_block, MAX_READ_REGISTERS)


def gap_limit(table: str, max_gap: int) -> int:
    """The gap budget in the table's own unit; for bit tables one register's worth is 16 bits."""
    return max_gap * BITS_PER_REGISTER if table in BIT_TABLES else max_gap


def plan_blocks(addresses: Sequence[ModbusAddress], max_gap: int, max_block: int) -> list[Block]:
    """Group tags into block reads, ordered by table then address.

    Raises ValueError when a single tag is wider than the block limit (a float64 with max_block 3),
    since no plan could read it.
    """
    blocks: list[Block] = []
    for table, order in _by_table(addresses).items():
        limit, gap_budget = span_limit(table, max_block), gap_limit(table, max_gap)
        run: list[int] = []
        start = end = 0
        for index in order:
            address = addresses[index]
            _check_width(address, limit)
            fits = bool(run) and address.address - end <= gap_budget and max(end, address.end) - start <= limit
            if fits:
                end = max(end, address.end)
                run.append(index)
                continue
            if run:
                blocks.append(_block(table, start, end, run, addresses))
            run, start, end = [index], address.address, address.end
        if run:
            blocks.append(_block(table, start, end, run, addresses))
    return blocks


def _by_table(addresses: Sequence[ModbusAddress]) -> dict[str, list[int]]:
    """Input indexes per table, sorted by address (then end, so bit tags sharing a register stay put)."""
    groups: dict[str, list[int]] = {}
    for index, address in enumerate(addresses):
        groups.setdefault(address.table, []).append(index)
    for order in groups.values():
        order.sort(key=lambda index: (addresses[index].address, addresses[index].end, index))
    return dict(sorted(groups.items()))


def _check_width(address: ModbusAddress, limit: int) -> None:
    if address.width > limit:
        raise ValueError(f"{address.dtype} at {address.table} {address.address} needs {address.width} "
                         f"registers but a block may hold at most {limit}; raise max_block")


def _block(table: str, start: int, end: int, run: list[int], addresses: Sequence[ModbusAddress]) -> Block:
    members = tuple((index, addresses[index].address - start) for index in run)
    return Block(table, start, end - start, members)
