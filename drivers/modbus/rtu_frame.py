"""Modbus RTU framing, as pure functions: the CRC, read requests, and finding and checking replies.

An RTU frame is `unit, function, data..., crc_lo, crc_hi`; the CRC is CRC-16/MODBUS (polynomial
0xA001 reflected, initial 0xFFFF) sent low byte first. A master that knows what it asked for can
tell the length of a reply from its first three bytes: an exception reply (function | 0x80) is 5
bytes, a read reply is 5 + its byte count. Length alone does not end a frame, though: a frame ends
when the line falls silent (3.5 characters), and whatever the line carried between two silences is
one window (`frame_of_window`). A window holding exactly one frame is a reply, or a late answer of
another slave; a window holding a frame and anything more is a collision, because two senders
talked at once and no byte of it can be trusted to be the reply (a faulty slave answering with
another's unit id and a valid CRC just before that slave's own reply is the case it catches).

    >>> read_request(1, "holding", 0, 2).hex()
    '010300000002c40b'
    >>> parse_reply(bytes.fromhex("010304000100022a32"), 1, "holding", 2)
    [1, 2]
"""

from __future__ import annotations

import array
import sys

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


class Collision(FrameError):
    """More than one frame, or a frame and trailing bytes, between two silences of the line."""


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


def frame_of_window(window: bytes | bytearray, unit_id: int) -> bytes | None:
    """The one frame of a window the line carried between two silences; None for a late frame of another unit.

    `window` starts with a complete frame (its length known from its head). Raises Collision when
    anything follows that frame in the same window, and FrameError when what follows cannot even be
    told apart. A CRC-valid frame of another unit alone in its window is a late answer of a slave
    that timed out earlier: the caller drops it and keeps waiting.

        >>> frame_of_window(bytes.fromhex("0103020007f986"), 1).hex()
        '0103020007f986'
        >>> frame_of_window(bytes.fromhex("0203020007bd86"), 1) is None
        True
    """
    length = frame_length(window)
    if length is None or len(window) < length:
        raise FrameError(f"garbage: {len(window)} bytes, not a whole frame")
    frame, rest = bytes(window[:length]), window[length:]
    if rest:
        raise Collision(f"collision: {_describe_frame(frame)} and {_describe_rest(rest)} in one window")
    if frame[0] != unit_id and crc_ok(frame):
        return None
    return frame


def _describe_frame(frame: bytes) -> str:
    validity = "valid" if crc_ok(frame) else "bad"
    return f"a {len(frame)}-byte frame of unit {frame[0]} ({validity} CRC)"


def _describe_rest(rest: bytes | bytearray) -> str:
    try:
        length = frame_length(rest)
    except FrameError:
        length = None
    if length is not None and len(rest) == length:
        return _describe_frame(bytes(rest))
    return f"{len(rest)} trailing bytes"


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def parse_reply(frame: bytes | bytearray, unit_id: int, table: str, count: int) -> list[int] | list[bool]:
    """The registers (or bits, padded to whole bytes) of a complete reply frame, checked as `reply_data`."""
    return unpack(table, reply_data(frame, unit_id, table, count))


def reply_data(frame: bytes | bytearray, unit_id: int, table: str, count: int) -> bytes:
    """The data of a complete reply frame as on the wire: big-endian registers, or bits packed least
    significant first (what `drivers.modbus.codec` decodes).

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
    return bytes(frame[HEADER:-2])


def unpack(table: str, data: bytes) -> list[int] | list[bool]:
    """Registers (big-endian words) or bits (least significant first, padded to whole bytes) of an
    answer's data. Registers are swapped in one C loop (`array`), not one Python call per word: at
    10,000 registers a second this was a tenth of the daemon's CPU time."""
    if FUNCTION_CODES[table] <= 2:
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(8 * len(data))]
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    return words.tolist()

