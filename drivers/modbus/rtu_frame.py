"""Modbus RTU framing, as pure functions: the CRC, read requests, and finding and checking replies.

An RTU frame is `unit, function, data..., crc_lo, crc_hi`; the CRC is CRC-16/MODBUS (polynomial
0xA001 reflected, initial 0xFFFF) sent low byte first. A master that knows what it asked for can
tell the length of a reply from its first three bytes: an exception reply (function | 0x80) is 5
bytes, a read reply is 5 + its byte count. That is what lets the bus recognise a whole frame without
relying on inter-character timing (which pseudo-terminals and USB adapters do not keep), skip a late
answer of another slave, and call anything else garbage.

    >>> read_request(1, "holding", 0, 2).hex()
    '010300000002c40b'
    >>> parse_reply(bytes.fromhex("010304000100022a32"), 1, "holding", 2)
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
EXCEPTION_FLAG = 0x80
EXCEPTION_LENGTH = 5
HEADER = 3  # unit, function, byte count (or exception code)
REQUEST_LENGTH = 8
MAX_FRAME = 256  # bytes, the longest RTU frame


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of `data`."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def read_request(unit_id: int, table: str, start: int, count: int) -> bytes:
    """The request frame that reads `count` registers (or bits) of `table` from `start`."""
    return with_crc(bytes((unit_id, FUNCTION_CODES[table])) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def reply_length(table: str, count: int) -> int:
    """Bytes of a normal reply to a read of `count` registers (or bits)."""
    data = -(-count // 8) if FUNCTION_CODES[table] <= 2 else 2 * count
    return HEADER + data + 2


class FrameError(ValueError):
    """Bytes that are not a sound reply to the request: garbage, a bad CRC, the wrong length."""


class ExceptionReply(Exception):
    """The slave answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code:#04x}")
        self.code = code


def frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the frame at the head of `buffer`, once its first three bytes are in; else None.

    Only read replies (functions 1-4) and exception replies are frames a reading master expects;
    any other function byte raises FrameError.
    """
    if len(buffer) < HEADER:
        return None
    function = buffer[1]
    if function & EXCEPTION_FLAG and function & 0x7F in FUNCTION_CODES.values():
        return EXCEPTION_LENGTH
    if function in FUNCTION_CODES.values():
        return HEADER + buffer[2] + 2
    raise FrameError(f"garbage: function byte {function:#04x} after unit {buffer[0]}")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def parse_reply(frame: bytes | bytearray, unit_id: int, table: str, count: int) -> list[int] | list[bool]:
    """The registers (or bits, padded to whole bytes) of a complete reply frame.

    Raises ExceptionReply for an exception reply and FrameError for anything that is not the reply
    to this request: bad CRC, another unit or function, a byte count that does not fit `count`.
    """
    if not crc_ok(frame):
        raise FrameError(f"garbage: CRC mismatch in {len(frame)} bytes")
    function = FUNCTION_CODES[table]
    if frame[0] != unit_id or frame[1] & 0x7F != function:
        raise FrameError(f"reply from unit {frame[0]} function {frame[1] & 0x7F}, "
                         f"expected unit {unit_id} function {function}")
    if frame[1] & EXCEPTION_FLAG:
        raise ExceptionReply(frame[2])
    if len(frame) != reply_length(table, count):
        raise FrameError(f"reply carries {frame[2]} data bytes, expected {reply_length(table, count) - 5}")
    data = bytes(frame[HEADER:-2])
    if function <= 2:
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(8 * len(data))]
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def encode_registers(unit_id: int, table: str, values: Sequence[int] | Sequence[bool]) -> bytes:
    """A slave's reply frame carrying `values` (simulators and tests use it)."""
    function = FUNCTION_CODES[table]
    if function <= 2:
        data = bytearray(-(-len(values) // 8))
        for index, bit in enumerate(values):
            data[index // 8] |= bool(bit) << (index % 8)
    else:
        data = b"".join(int(value).to_bytes(2, "big") for value in values)
    return with_crc(bytes((unit_id, function, len(data))) + bytes(data))


def encode_exception(unit_id: int, function: int, code: int) -> bytes:
    return with_crc(bytes((unit_id, function | EXCEPTION_FLAG, code)))
