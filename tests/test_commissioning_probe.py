"""The probe's pure parts: its arguments, request splitting, and decoding in every order."""

from __future__ import annotations

import struct

import pytest

from gatewayd.commissioning.probe import (
    ProbeError, Target, candidates, chunks, matches, parse_expect, parse_range, parse_target, parse_types,
)


def words(fmt: str, value) -> list[int]:
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def test_urls_name_tcp_or_a_serial_port_and_nothing_else():
    assert parse_target("tcp://10.0.0.5:1502") == Target("tcp", host="10.0.0.5", port=1502)
    assert parse_target("tcp://plc1") == Target("tcp", host="plc1", port=502)
    assert parse_target("rtu:///dev/ttyUSB0") == Target("rtu", device="/dev/ttyUSB0")
    for bad in ("10.0.0.5:502", "tcp://", "tcp://h:99999", "tcp://h:1/x", "rtu://dev/ttyS0", "udp://h:502"):
        with pytest.raises(ProbeError):
            parse_target(bad)


def test_ranges_include_both_ends_and_stay_in_the_address_space():
    assert parse_range("0-200") == (0, 201)
    assert parse_range("7") == (7, 1)
    assert parse_range("65535") == (65535, 1)
    for bad in ("65536", "5-4", "-1", "a-b", "1-65536", ""):
        with pytest.raises(ProbeError, match="--range"):
            parse_range(bad)


def test_expectations_and_types():
    assert parse_expect("-12.5@100") == (-12.5, 100)
    with pytest.raises(ProbeError, match="VALUE@ADDRESS"):
        parse_expect("12.5")
    assert parse_types("float32,int16") == ("int16", "float32")
    with pytest.raises(ProbeError, match="int64 unknown"):
        parse_types("int64")


def test_requests_split_at_the_protocol_limit():
    assert chunks("holding", 0, 125) == [(0, 125)]
    assert chunks("holding", 0, 126) == [(0, 125), (125, 1)]
    assert chunks("input", 10, 251) == [(10, 125), (135, 125), (260, 1)]
    assert chunks("coil", 0, 2001) == [(0, 2000), (2000, 1)]


def swap_bytes(registers: list[int]) -> list[int]:
    return [int.from_bytes(word.to_bytes(2, "little"), "big") for word in registers]


@pytest.mark.parametrize("order, swap", [("ABCD", lambda w: w), ("CDAB", lambda w: w[::-1]),
                                         ("BADC", swap_bytes), ("DCBA", lambda w: swap_bytes(w[::-1]))])
def test_each_order_decodes_its_own_layout_and_ranks_first(order, swap):
    registers = [0, *swap(words(">f", 1.25)), *swap(words(">d", -2.5e10)), 0]
    found = candidates("holding", 100, registers)
    assert [(c.dtype, c.order) for c in matches(found, 1.25, 101, 1e-6)] == [("float32", order)]
    assert [(c.dtype, c.order) for c in matches(found, -2.5e10, 103, 1e-6)] == [("float64", order)]
    # 8 registers from 100: the last float32 starts at 106, the last float64 at 104, nothing runs past 107
    assert max(c.address for c in found if c.dtype == "float32") == 106
    assert max(c.address for c in found if c.dtype == "float64") == 104


def test_integers_and_the_last_register():
    found = candidates("holding", 0, [*words(">i", -70000), 0xFFFF])
    assert ("int32", "ABCD") in [(c.dtype, c.order) for c in matches(found, -70000, 0, 0)]
    assert [(c.dtype, c.order) for c in matches(found, 65535, 2, 0)] == [("uint16", "AB"), ("uint16", "BA")]
    assert [(c.dtype, c.order) for c in matches(found, -1, 2, 0)] == [("int16", "AB"), ("int16", "BA")]
    assert not [c for c in found if c.address == 2 and c.dtype not in ("int16", "uint16")]
