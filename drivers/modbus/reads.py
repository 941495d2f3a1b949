"""A planned block read and what can go wrong with it, shared by every Modbus transport.

A `PlannedRead` is one request of a poll: its block, the decoder compiled for it, and the positions
its values go to. The failures are the kit's (`drivers.kit`): `CommError` (no answer: the device is
unreachable) and `BlockError` (an answer, but not the block's values: only its rows are bad).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.kit import BadAnswer, NoAnswer
from drivers.modbus.codec import BlockDecoder, ResponseLengthError
from drivers.modbus.plan import Block, plan_blocks
from core.types import Quality

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
GATEWAY_UNREACHABLE = {0x0A: "gateway path unavailable", 0x0B: "gateway target device failed to respond"}
EXCEPTION_NAMES = {
    0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value",
    0x04: "server device failure", 0x05: "acknowledge", 0x06: "server device busy",
    0x08: "memory parity error", **GATEWAY_UNREACHABLE,
}


class CommError(NoAnswer):
    """The device could not be reached: no connection, connection lost, or no answer in time."""


class BlockError(BadAnswer):
    """The device answered a block read but not with usable data; only that block's rows are bad."""


def decode_error(message: str) -> BlockError:
    """An answer that is not a valid answer to the request: DECODE_ERROR for its block."""
    return BlockError(message, Quality.DECODE_ERROR)


@dataclass(frozen=True, eq=False)
class PlannedRead:
    """A block with its decoder and the positions its values go to, in the decoder's order."""

    block: Block
    decoder: BlockDecoder
    rows: np.ndarray

    def describe(self) -> str:
        return describe(self.block)

    def decode(self, data: bytes) -> np.ndarray:
        """The block's values from its answer's data as on the wire; data of the wrong length for the
        block's registers or bits is a BlockError."""
        try:
            return self.decoder.decode_data(data)
        except ResponseLengthError as exc:
            raise decode_error(f"wrong length: {exc}") from None


def planned_reads(addresses: Sequence, rows: np.ndarray, max_gap: int, max_block: int) -> list[PlannedRead]:
    """The blocks that read `addresses` (tag i's values go to rows[i]), each with its compiled decoder."""
    return [PlannedRead(block, BlockDecoder(block, addresses), rows[[index for index, _ in block.members]])
            for block in plan_blocks(addresses, max_gap, max_block)]


def describe(block: Block) -> str:
    return f"{block.table} {block.start}..{block.end - 1}"


def exception_error(code: int) -> BlockError:
    """A Modbus exception reply: DEVICE_ERROR, or COMM_FAILURE for the gateway codes 0x0A/0x0B."""
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    quality_code = Quality.COMM_FAILURE if code in GATEWAY_UNREACHABLE else Quality.DEVICE_ERROR
    return BlockError(f"exception {code:#04x} ({name})", quality_code)
