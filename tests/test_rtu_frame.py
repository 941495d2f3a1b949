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
    Collision, ExceptionReply, FrameError, crc16, frame_length, frame_of_window, parse_reply, read_request, reply_data,
    reply_length,
)
from hil_tests.sim.rtu_replies import encode_exception, encode_registers


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
    assert reply_data(frame, 5, table, len(values)) == frame[3:-2], "the data as on the wire, for the decoder"


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


REPLY = encode_registers(5, "holding", [1, 2])
IMPOSTOR = encode_registers(5, "holding", [666, 666])  # another slave posing as unit 5, valid CRC


def test_a_window_with_one_frame_is_the_reply_and_a_lone_frame_of_another_unit_is_late():
    assert frame_of_window(REPLY, 5) == REPLY
    assert frame_of_window(encode_exception(5, 3, 2), 5) == encode_exception(5, 3, 2)
    assert frame_of_window(encode_registers(6, "holding", [1, 2]), 5) is None
    assert frame_of_window(REPLY[:-1] + b"\x00", 5) == REPLY[:-1] + b"\x00", "parse_reply judges the CRC"


@pytest.mark.parametrize("window, message", [
    (IMPOSTOR + REPLY, "frame of unit 5 \\(valid CRC\\) and a 9-byte frame of unit 5 \\(valid CRC\\)"),
    (IMPOSTOR + REPLY[:2], "and 2 trailing bytes"),
    (REPLY + b"\x00", "and 1 trailing bytes"),
    (encode_registers(6, "holding", [1, 2]) + REPLY, "frame of unit 6 .* and a 9-byte frame of unit 5"),
    (encode_exception(5, 3, 2) + b"\xff\x10\x00", "5-byte frame of unit 5 .* and 3 trailing bytes"),
])
def test_a_frame_and_anything_more_in_one_window_is_a_collision(window, message):
    with pytest.raises(Collision, match=message):
        frame_of_window(window, 5)


@given(st.binary(min_size=1, max_size=40))
def test_trailing_bytes_after_a_reply_are_never_taken_for_the_reply(trailing):
    with pytest.raises(Collision):
        frame_of_window(IMPOSTOR + trailing, 5)


def test_a_window_shorter_than_its_frame_is_garbage():
    with pytest.raises(FrameError, match="not a whole frame"):
        frame_of_window(REPLY[:-1], 5)
