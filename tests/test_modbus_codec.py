"""Decoding registers into engineering values.

Expected register contents are built with `struct.pack` (the value's big-endian bytes, rearranged
into the device's order on the wire) or written out by hand, never with the codec's own helpers.
"""

from __future__ import annotations

import math
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import BlockDecoder, ResponseLengthError
from drivers.values import finite_quality
from drivers.modbus.config import ModbusAddress
from drivers.modbus.plan import plan_blocks
from core.types import Quality

FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]  # (byte, word)


def wire(dtype: str, value: float, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """The registers a device with this byte and word order sends for `value`."""
    data = struct.pack(">" + FORMATS[dtype], value)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


def decoder(*addresses: ModbusAddress, max_gap: int = 125) -> BlockDecoder:
    (block,) = plan_blocks(addresses, max_gap, 125)
    return BlockDecoder(block, addresses)


def decode_one(address: ModbusAddress, registers: list[int]) -> float:
    return float(decoder(address).decode(registers)[0])


# the classic byte-order spellings of two well-known values
KNOWN = [
    ("float32", 1.0, "big", "big", [0x3F80, 0x0000]),  # ABCD
    ("float32", 1.0, "big", "little", [0x0000, 0x3F80]),  # CDAB
    ("float32", 1.0, "little", "big", [0x803F, 0x0000]),  # BADC
    ("float32", 1.0, "little", "little", [0x0000, 0x803F]),  # DCBA
    ("uint32", 0x12345678, "big", "big", [0x1234, 0x5678]),
    ("uint32", 0x12345678, "big", "little", [0x5678, 0x1234]),
    ("uint32", 0x12345678, "little", "big", [0x3412, 0x7856]),
    ("uint32", 0x12345678, "little", "little", [0x7856, 0x3412]),
    ("int32", -2, "big", "big", [0xFFFF, 0xFFFE]),
    ("int32", -2, "big", "little", [0xFFFE, 0xFFFF]),
    ("int16", -2, "big", "big", [0xFFFE]),
    ("int16", -2, "little", "big", [0xFEFF]),
    ("uint16", 0xABCD, "big", "big", [0xABCD]),
    ("uint16", 0xABCD, "little", "big", [0xCDAB]),
    ("float64", -2.5, "big", "big", [0xC004, 0x0000, 0x0000, 0x0000]),
    ("float64", -2.5, "big", "little", [0x0000, 0x0000, 0x0000, 0xC004]),
    ("float64", -2.5, "little", "little", [0x0000, 0x0000, 0x0000, 0x04C0]),
]


@pytest.mark.parametrize("dtype, value, byte_order, word_order, registers", KNOWN)
def test_known_encodings(dtype, value, byte_order, word_order, registers):
    assert wire(dtype, value, byte_order, word_order) == registers  # the test's own encoder agrees
    assert decode_one(ModbusAddress("holding", 0, dtype, None, byte_order, word_order), registers) == value


VALUES = {
    "int16": [-32768, -1, 0, 1, 32767],
    "uint16": [0, 1, 65535],
    "int32": [-(2**31), -1, 0, 2**31 - 1],
    "uint32": [0, 1, 2**32 - 1],
    "float32": [0.0, -0.0, 1.5, -123.25, 3.4028234663852886e38, 1.401298464324817e-45],
    "float64": [0.0, math.pi, -1e300, 5e-324],
}


TYPE_ORDERS = [(dtype, byte_order, word_order) for dtype in sorted(VALUES) for byte_order, word_order in ORDERS
               if not (dtype in ("int16", "uint16") and word_order == "little")]  # one register has no word order


@pytest.mark.parametrize("dtype, byte_order, word_order", TYPE_ORDERS)
def test_extremes_of_every_type_in_every_order(dtype, byte_order, word_order):
    for value in VALUES[dtype]:
        address = ModbusAddress("holding", 0, dtype, None, byte_order, word_order)
        assert decode_one(address, wire(dtype, value, byte_order, word_order)) == value


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(ORDERS))
def test_any_finite_float64_round_trips(value, orders):
    byte_order, word_order = orders
    address = ModbusAddress("holding", 0, "float64", None, byte_order, word_order)
    assert decode_one(address, wire("float64", value, byte_order, word_order)) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(ORDERS))
def test_any_finite_float32_round_trips(value, orders):
    byte_order, word_order = orders
    address = ModbusAddress("holding", 0, "float32", None, byte_order, word_order)
    assert decode_one(address, wire("float32", value, byte_order, word_order)) == value


def test_scale_and_offset_give_engineering_units():
    address = ModbusAddress("holding", 0, "int16", scale=0.1, offset=5.0)
    assert decode_one(address, wire("int16", -123)) == pytest.approx(-7.3)


@pytest.mark.parametrize("register, bit, byte_order, expected", [
    (0b1010, 0, "big", 0.0),
    (0b1010, 1, "big", 1.0),
    (0b1010, 3, "big", 1.0),
    (0x8000, 15, "big", 1.0),
    (0x0100, 8, "big", 1.0),
    (0x0100, 0, "little", 1.0),  # bytes swapped first: 0x0001
    (0x0100, 8, "little", 0.0),
])
def test_bit_of_a_register(register, bit, byte_order, expected):
    assert decode_one(ModbusAddress("holding", 0, "bit", bit, byte_order), [register]) == expected


def test_coils_decode_to_zero_and_one_at_their_offsets():
    coils = [ModbusAddress("coil", address, "bool") for address in (3, 0, 9)]
    values = decoder(*coils).decode([True, False, False, False, True, True, True, True, True, False])
    assert values.tolist() == [1.0, 0.0, 0.0]  # members in address order: 0, 3, 9


def test_mixed_block_values_follow_member_order():
    tags = [ModbusAddress("holding", 6, "bit", 2), ModbusAddress("holding", 0, "float32", word_order="little"),
            ModbusAddress("holding", 3, "int16", scale=0.5), ModbusAddress("holding", 6, "bit", 0)]
    block_decoder = decoder(*tags)
    registers = wire("float32", 2.5, "big", "little") + [0] + wire("int16", -8) + [0, 0, 0b0100]
    by_member = dict(zip((index for index, _ in block_decoder.block.members), block_decoder.decode(registers)))
    assert by_member == {0: 1.0, 1: 2.5, 2: -4.0, 3: 0.0}


@pytest.mark.parametrize("dtype, value", [("float32", math.nan), ("float32", math.inf), ("float32", -math.inf),
                                          ("float64", math.nan), ("float64", -math.inf)])
def test_non_finite_floats_become_nan_and_bad_quality(dtype, value):
    tags = [ModbusAddress("holding", 0, dtype), ModbusAddress("holding", 4, "float32")]
    values = decoder(*tags).decode(wire(dtype, value) + [0] * (4 - len(wire(dtype, value))) + wire("float32", 1.0))
    assert math.isnan(values[0]) and values[1] == 1.0
    assert finite_quality(values).tolist() == [Quality.OUT_OF_RANGE, Quality.GOOD]


def test_overflow_from_scaling_is_not_finite_either():
    address = ModbusAddress("holding", 0, "float64", scale=1e300)
    assert math.isnan(decode_one(address, wire("float64", 1e300)))


@pytest.mark.parametrize("registers", [[], [0], [0, 0, 0, 0]])
def test_wrong_number_of_registers_raises(registers):
    block_decoder = decoder(ModbusAddress("holding", 10, "float32"), ModbusAddress("holding", 12, "uint16"))
    with pytest.raises(ResponseLengthError) as error:
        block_decoder.decode(registers)
    assert (error.value.expected, error.value.got) == (3, len(registers))
    assert "holding 10..12: asked for 3" in str(error.value)


@pytest.mark.parametrize("length, ok", [(5, True), (8, True), (4, False), (7, False), (16, False)])
def test_bit_responses_may_be_padded_to_whole_bytes_only(length, ok):
    block_decoder = decoder(ModbusAddress("discrete", 0, "bool"), ModbusAddress("discrete", 4, "bool"))
    bits = [True] * length
    if ok:
        assert block_decoder.decode(bits).tolist() == [1.0, 1.0]
    else:
        with pytest.raises(ResponseLengthError):
            block_decoder.decode(bits)


def test_decode_returns_a_fresh_float64_array():
    block_decoder = decoder(ModbusAddress("holding", 0, "uint16"))
    first, second = block_decoder.decode([1]), block_decoder.decode([2])
    assert first.dtype == np.float64 and first.tolist() == [1.0] and second.tolist() == [2.0]


@given(st.lists(st.tuples(st.sampled_from(["int16", "uint16", "int32", "uint32", "bit"]),
                          st.sampled_from([1.0, 0.1, -2.0]), st.sampled_from([0.0, 5.0, -0.5])),
                min_size=1, max_size=6), st.integers(0, 65535))
def test_integer_blocks_scale_and_offset_each_tag_or_pass_raw_values_through(tags, word) -> None:
    """A block of integers none of which is scaled or offset skips the arithmetic: its values are the raw
    numbers; one scaled or offset tag among them makes the block do the arithmetic for all."""
    addresses, offset = [], 0
    for dtype, scale, shift in tags:
        addresses.append(ModbusAddress("holding", offset, dtype, bit=3 if dtype == "bit" else None,
                                       scale=scale, offset=shift))
        offset += 2
    plain = decoder(*[ModbusAddress(a.table, a.address, a.dtype, bit=a.bit) for a in addresses])
    registers = [word] * plain.block.count
    raw = plain.decode(registers)
    assert raw.tolist() == [decode_one(replace(a, address=0, scale=1.0, offset=0.0), registers[:a.width])
                            for a in addresses]
    expected = [value * a.scale + a.offset for value, a in zip(raw.tolist(), addresses)]
    assert decoder(*addresses).decode(registers).tolist() == expected


def test_one_quality_for_a_block_without_nan() -> None:
    assert finite_quality(np.array([1.0, -0.0, 65535.0])) == Quality.GOOD
    assert finite_quality(np.array([1.0, math.nan])).tolist() == [Quality.GOOD, Quality.OUT_OF_RANGE]


def reference(address: ModbusAddress, words: list[int]) -> float:
    """One tag's engineering value from its own registers, by `struct`, as a device's manual would."""
    data = b"".join(word.to_bytes(2, "big") for word in words)
    pairs = [data[i:i + 2] for i in range(0, len(data), 2)]
    if address.byte_order == "little":
        pairs = [pair[::-1] for pair in pairs]
    if address.word_order == "little":
        pairs.reverse()
    if address.dtype == "bit":
        raw = float(int.from_bytes(pairs[0], "big") >> address.bit & 1)
    else:
        raw = float(struct.unpack(">" + FORMATS[address.dtype], b"".join(pairs))[0])
    if address.dtype not in ("float32", "float64") and address.scale == 1.0 and address.offset == 0.0:
        return raw
    value = raw * address.scale + address.offset if math.isfinite(raw) else math.nan
    return value if math.isfinite(value) else math.nan


SPECIAL_WORDS = [0x7FC0, 0x7F80, 0xFF80, 0x7FF8, 0xFFF0, 0x0000, 0xFFFF, 0x8000]  # NaN and infinity heads


@st.composite
def register_blocks(draw):
    """Tags of every type and order laid out with gaps (none, often), and the words a device sends."""
    addresses, at = [], draw(st.integers(0, 3))
    same_type = draw(st.sampled_from([None, "uint16", "int16", "float32"]))  # runs of one type, in order
    for _ in range(draw(st.integers(1, 12))):
        dtype = same_type or draw(st.sampled_from(sorted(REGISTER_WIDTHS)))
        byte_order, word_order = ("big", "big") if same_type else draw(st.sampled_from(ORDERS))
        scale, shift = draw(st.sampled_from([(1.0, 0.0), (1.0, 0.0), (0.1, 0.0), (2.0, -5.0), (1e300, 0.0)]))
        addresses.append(ModbusAddress("holding", at, dtype, bit=draw(st.integers(0, 15)) if dtype == "bit" else None,
                                       byte_order=byte_order, word_order=word_order, scale=scale, offset=shift))
        at += REGISTER_WIDTHS[dtype] + (0 if same_type else draw(st.sampled_from([0, 0, 1, 3])))
    words = draw(st.lists(st.one_of(st.integers(0, 65535), st.sampled_from(SPECIAL_WORDS)),
                          min_size=at, max_size=at))
    return addresses, words


REGISTER_WIDTHS = {"int16": 1, "uint16": 1, "bit": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


def same(left: list[float], right: list[float]) -> bool:
    return len(left) == len(right) and all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(left, right))


@given(register_blocks())
def test_the_answers_bytes_decode_as_each_tag_alone_would(block):
    """Straight from the bytes (one stretch of consecutive values) or gathered (any other layout), every
    tag's value is what its own registers say, and the list of registers decodes the same."""
    addresses, words = block
    block_decoder = decoder(*addresses, max_gap=3)
    data = b"".join(word.to_bytes(2, "big") for word in words[block_decoder.block.start:block_decoder.block.end])
    expected = [reference(addresses[index], words[block_decoder.block.start + offset:][:addresses[index].width])
                for index, offset in block_decoder.block.members]
    assert same(block_decoder.decode_data(data).tolist(), expected)
    assert same(block_decoder.decode(words[block_decoder.block.start:block_decoder.block.end]).tolist(), expected)


def test_consecutive_values_in_the_standard_order_are_read_straight_from_the_bytes():
    counters = decoder(*[ModbusAddress("holding", address, "uint16") for address in range(125)])
    data = np.arange(60000, 60125).astype(">u2").tobytes()
    assert counters.decode_data(data).tolist() == list(range(60000, 60125))
    mixed = decoder(ModbusAddress("holding", 0, "int16"), ModbusAddress("holding", 1, "int16"),
                    ModbusAddress("holding", 2, "float32"), ModbusAddress("holding", 4, "float32"),
                    ModbusAddress("holding", 6, "float32", byte_order="little"))
    # the two runs (int16, the big-endian float32s) read from the bytes; the swapped float32 gathered
    assert [group.run for group in mixed._groups] == [slice(0, 2), None]
    swapped = b"".join(word.to_bytes(2, "big") for word in wire("float32", 3.0, "little", "big"))
    data = struct.pack(">hhff", -2, 7, 1.5, -0.25) + swapped
    assert mixed.decode_data(data).tolist() == [-2.0, 7.0, 1.5, -0.25, 3.0]


@pytest.mark.parametrize("table, length", [("holding", 5), ("holding", 7), ("coil", 0), ("coil", 2)])
def test_data_of_the_wrong_length_raises(table, length):
    dtype = "bool" if table == "coil" else "uint16"
    block_decoder = decoder(ModbusAddress(table, 0, dtype), ModbusAddress(table, 2, dtype))  # 3 registers or bits
    with pytest.raises(ResponseLengthError, match="asked for 3"):
        block_decoder.decode_data(bytes(length))


def test_bits_decode_from_their_packed_bytes():
    coils = decoder(*[ModbusAddress("coil", address, "bool") for address in (0, 3, 8, 9)])
    assert coils.decode_data(bytes([0b00001000, 0b00000010])).tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("values, quality", [
    ([1.0, -0.0, 65535.0], Quality.GOOD),
    ([math.inf, -math.inf, 1e308, -1e308], Quality.GOOD),  # no NaN: infinities do not cancel in the test
    ([1e200, 1e200], Quality.GOOD),  # squares overflow to infinity, never to NaN
    ([], Quality.GOOD),
])
def test_one_code_for_a_block_without_nan(values, quality):
    assert finite_quality(np.array(values, dtype=np.float64)) == quality


@given(st.lists(st.one_of(st.floats(), st.just(math.nan)), min_size=1, max_size=20))
def test_a_code_per_value_where_a_value_is_nan(values):
    got = finite_quality(np.array(values, dtype=np.float64))
    if any(math.isnan(value) for value in values):
        assert got.tolist() == [Quality.OUT_OF_RANGE if math.isnan(value) else Quality.GOOD for value in values]
    else:
        assert got == Quality.GOOD
