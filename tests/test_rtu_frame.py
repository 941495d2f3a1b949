"""RTU framing against pymodbus' own encoder and CRC, and what counts as garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import ReadCoilsRequest
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from drivers.modbus.rtu_frame import (
    ExceptionReply, FrameError, crc16, encode_exception, encode_registers, frame_length, parse_reply,
    read_request, reply_length,
)


@given(st.binary(min_size=1, max_size=256))
def test_crc_matches_pymodbus(data):
    assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@pytest.mark.parametrize("request_class, table", [(ReadHoldingRegistersRequest, "holding"),
                                                  (ReadCoilsRequest, "coil")])
def test_read_request_is_the_frame_pymodbus_builds(request_class, table):
    pdu = request_class(address=300, count=17, dev_id=9)
    assert read_request(9, table, 300, 17) == FramerRTU(DecodePDU(is_server=False)).buildFrame(pdu)


@pytest.mark.parametrize("table, values", [("holding", [0, 1, 65535, 4660]), ("input", [7]),
                                           ("coil", [True, False, True]), ("discrete", [False] * 9 + [True])])
def test_replies_round_trip(table, values):
    frame = encode_registers(5, table, values)
    assert frame_length(frame[:3]) == len(frame) == reply_length(table, len(values))
    parsed = parse_reply(frame, 5, table, len(values))
    assert parsed[:len(values)] == values and len(parsed) in (len(values), -(-len(values) // 8) * 8)


def test_exception_reply_names_its_code():
    frame = encode_exception(5, 3, 0x02)
    assert frame_length(frame) == 5
    with pytest.raises(ExceptionReply) as caught:
        parse_reply(frame, 5, "holding", 2)
    assert caught.value.code == 0x02


@pytest.mark.parametrize("frame, message", [
    (encode_registers(5, "holding", [1, 2])[:-1] + b"\x00", "CRC mismatch"),
    (encode_registers(6, "holding", [1, 2]), "reply from unit 6"),
    (encode_registers(5, "input", [1, 2]), "function 4, expected unit 5 function 3"),
    (encode_registers(5, "holding", [1]), "expected 4"),
])
def test_anything_but_the_reply_is_garbage(frame, message):
    with pytest.raises(FrameError, match=message):
        parse_reply(frame, 5, "holding", 2)


def test_an_unexpected_function_byte_is_garbage_at_once():
    assert frame_length(b"\x05\x03") is None  # too short to tell
    with pytest.raises(FrameError, match="function byte 0x10"):
        frame_length(b"\x05\x10\x00")
