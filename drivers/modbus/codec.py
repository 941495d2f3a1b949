"""Turning a block's raw registers (or bits) into engineering values, decided once and run vectorised.

At start every tag of a block is compiled into byte positions: for each data type, an index array that
picks the tag's bytes out of the response in big-endian order, whatever the device's byte and word
order. Decoding a poll is then one gather and one `view` per data type present in the block, and one
multiply-add for scale and offset over the whole block, with no per-tag Python on the hot path. A
data type whose tags are consecutive values in the standard order (big-endian bytes and words, one
after the other without gaps, as a block of uint16 counters is) is not gathered: its values are read
straight from the answer's bytes (`np.frombuffer` with the wire type).

The decoder takes the answer's data as it came off the wire (`decode_data`: 2 bytes per register,
big-endian; bits packed least significant first), or a list of registers or bits (`decode`), which
it packs into those bytes first.

Byte order is the order of the two bytes inside each 16-bit register ("big" is the Modbus standard);
word order is the order of the registers of a 32- or 64-bit value ("big": most significant register at
the lowest address). The four classic spellings map as ABCD = big/big, CDAB = big bytes/little words,
BADC = little bytes/big words, DCBA = little/little.

A device that sends NaN or infinity (many PLCs do for a broken input channel or an overflowed
calculation) decodes to NaN, and `drivers.values.finite_quality` marks it OUT_OF_RANGE: the response
itself was sound and decoded as configured, it is the device's value that is unusable. DECODE_ERROR
is kept for responses that cannot be decoded at all (wrong length), DEVICE_ERROR for Modbus
exception responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.modbus.config import BIT_TABLES, ModbusAddress
from drivers.modbus.plan import Block

# big-endian numpy type of each register data type; a bit tag is read as its whole register first
_WIRE_TYPES = {
    "int16": ">i2", "uint16": ">u2", "bit": ">u2",
    "int32": ">i4", "uint32": ">u4", "float32": ">f4",
    "float64": ">f8",
}

_FLOAT_TYPES = frozenset({"float32", "float64"})


class ResponseLengthError(ValueError):
    """A response carried a different number of registers or bits (or data bytes) than the block asked for."""

    def __init__(self, block: Block, got: int, data_bytes: int | None = None) -> None:
        asked = f"{block.count}" if data_bytes is None else f"{block.count} ({data_bytes} bytes)"
        unit = "" if data_bytes is None else " bytes"
        super().__init__(f"{block.table} {block.start}..{block.end - 1}: asked for {asked}, got {got}{unit}")
        self.expected = block.count if data_bytes is None else data_bytes
        self.got = got


@dataclass(frozen=True)
class _TypeGroup:
    """All tags of one data type in a block: where their bytes are and where their values go."""

    positions: np.ndarray  # index into the decoder's output
    byte_index: np.ndarray  # (tags, bytes) positions in the response, most significant byte first
    wire_type: np.dtype
    bits: np.ndarray | None  # bit number per tag, for type bit
    run: slice | None  # positions[0]..positions[-1] + 1 when the tags are consecutive values in the
    #                    standard order: their bytes are one stretch of the answer, from byte_index[0, 0]


class BlockDecoder:
    """Decodes the response to one Block into float64 values in the order of `block.members`.

    `addresses` is the sequence the block was planned from (members index into it).
    """

    def __init__(self, block: Block, addresses: Sequence[ModbusAddress]) -> None:
        self.block = block
        members = [addresses[index] for index, _ in block.members]
        offsets = [offset for _, offset in block.members]
        self._scale = np.array([address.scale for address in members], dtype=np.float64)
        self._offset = np.array([address.offset for address in members], dtype=np.float64)
        self._bit_offsets = np.array(offsets, dtype=np.intp)
        self._is_bits = block.table in BIT_TABLES
        # bit responses travel in whole bytes, so a padded response is also complete
        self._accepted_lengths = {block.count, -(-block.count // 8) * 8} if self._is_bits else {block.count}
        self._data_bytes = -(-block.count // 8) if self._is_bits else 2 * block.count
        self._groups = () if self._is_bits else _compile_groups(members, offsets)
        # one type whose values are the whole answer, in order (a block of uint16 counters): no gather
        self._whole = self._groups[0] if len(self._groups) == 1 and self._groups[0].run == slice(0, len(members)) \
            and self._data_bytes == self._groups[0].byte_index.size else None
        # integers (and bits) with neither scale nor offset: the raw values are the engineering values,
        # exact and finite, so the block skips the multiply-add and the check for non-finite results
        self._raw_is_value = all(address.dtype not in _FLOAT_TYPES and address.scale == 1.0 and address.offset == 0.0
                                 for address in members)

    def decode(self, registers: Sequence[int] | Sequence[bool]) -> np.ndarray:
        """`decode_data` of a list of registers (ints) or bits.

        Raises ResponseLengthError unless exactly `block.count` registers are given, or for coil and
        discrete blocks `block.count` bits or that many rounded up to whole bytes (the padding is ignored).
        """
        if len(registers) not in self._accepted_lengths:
            raise ResponseLengthError(self.block, len(registers))
        if self._is_bits:
            return self.decode_data(np.packbits(np.asarray(registers, dtype=bool), bitorder="little").tobytes())
        return self.decode_data(np.asarray(registers, dtype=np.uint16).astype(">u2").tobytes())

    def decode_data(self, data: bytes) -> np.ndarray:
        """Engineering values (raw * scale + offset) of an answer's data as on the wire: 2 bytes per
        register, big-endian, or for coil and discrete blocks the bits packed least significant first
        in whole bytes; NaN where the device sent a non-finite number.

        Raises ResponseLengthError unless the data is exactly what `block.count` registers or bits take.
        """
        if len(data) != self._data_bytes:
            raise ResponseLengthError(self.block, len(data), self._data_bytes)
        if self._is_bits:
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
            raw = bits[self._bit_offsets].astype(np.float64)
        else:
            raw = self._decode_registers(data)
        if self._raw_is_value:
            return raw
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is expected, and handled
            values = raw * self._scale + self._offset
        values[~np.isfinite(values)] = np.nan
        return values

    def _decode_registers(self, data: bytes) -> np.ndarray:
        if self._whole is not None:
            return np.frombuffer(data, self._whole.wire_type).astype(np.float64)
        raw = np.empty(len(self._scale), dtype=np.float64)
        wire = None
        for group in self._groups:
            if group.run is not None:
                raw[group.run] = np.frombuffer(data, group.wire_type, len(group.positions), group.byte_index[0, 0])
                continue
            if wire is None:
                wire = np.frombuffer(data, dtype=np.uint8)
            values = wire[group.byte_index].view(group.wire_type)[:, 0]
            if group.bits is not None:
                values = (values >> group.bits) & 1
            raw[group.positions] = values
        return raw


def byte_positions(address: ModbusAddress, offset: int) -> list[int]:
    """Where the bytes of a value sit in a response, most significant first.

    `offset` is the tag's first register within the block; the response holds two bytes per register.
    """
    registers = list(range(offset, offset + address.width))
    if address.word_order == "little":
        registers.reverse()
    high, low = (0, 1) if address.byte_order == "big" else (1, 0)
    return [2 * register + part for register in registers for part in (high, low)]


def _compile_groups(members: list[ModbusAddress], offsets: list[int]) -> tuple[_TypeGroup, ...]:
    by_type: dict[str, list[int]] = {}
    for position, address in enumerate(members):
        by_type.setdefault(address.dtype, []).append(position)
    groups = []
    for dtype, positions in by_type.items():
        byte_index = np.array([byte_positions(members[p], offsets[p]) for p in positions], dtype=np.intp)
        bits = np.array([members[p].bit for p in positions], dtype=np.uint16) if dtype == "bit" else None
        run = slice(positions[0], positions[-1] + 1) if bits is None and _one_stretch(positions, byte_index) else None
        groups.append(_TypeGroup(np.array(positions, dtype=np.intp), byte_index, np.dtype(_WIRE_TYPES[dtype]),
                                 bits, run))
    return tuple(groups)


def _one_stretch(positions: list[int], byte_index: np.ndarray) -> bool:
    """Whether tags (of one type) are consecutive outputs whose bytes are, most significant first, one
    stretch of the answer: consecutive values in the standard order, no gap, no overlap."""
    first = byte_index[0, 0]
    return (positions == list(range(positions[0], positions[0] + len(positions)))
            and np.array_equal(byte_index.ravel(), np.arange(first, first + byte_index.size)))
