"""A read-only Modbus client over IP of our own: functions 1-4, one request at a time, every answer checked.

Why not pymodbus' client: measured against `hil_tests/sim/hostile.py`, pymodbus 3.16 drops an answer
under another transaction id, unit id or protocol id, and bytes it cannot frame, without telling the
caller, who then waits out the whole timeout and calls the device silent. A gateway must tell "the
device answered garbage" from "the device did not answer", at once. Here each answer is checked
against its request, and anything that is not a valid answer is a `BlockError` with DECODE_ERROR the
moment it arrives:

- Modbus TCP and UDP (MBAP): protocol id 0, the request's transaction id, a length that fits, the
  request's unit id, the function code (or its exception), a byte count of exactly the registers or
  bits asked for, and a frame that ends where its length says (over UDP: one datagram, one frame);
- RTU over TCP: the read-reply framing of `rtu_frame` (unit, function, byte count, CRC).

Each answer carries the kernel's receive time (`answered_at`), so a value read while the event loop
was busy elsewhere is not made younger than it is.

The answer is checked as its bytes come in: the event loop's reader callback reads the socket and
frames what it read against the one request outstanding, and resolves that request's future once
the answer is whole or cannot be one; a timer at the timeout resolves it otherwise. `read_data`
returns the checked answer's data as on the wire (registers big-endian, bits packed least
significant first), which `drivers.modbus.codec` decodes without a Python list in between; `read`
returns it as a list of ints (or bools).

Bytes that arrive with no request outstanding, or follow a complete answer, mean the stream is out
of step: the link is closed before the next request (and opened afresh), so no answer is ever taken
for another request's. A request with nothing back within the timeout is a `CommError` (an answer
already in the host when the timeout fires counts: a busy event loop is not a silent device); bytes
that stop short of a frame are garbage (DECODE_ERROR) when the timeout ends.

    link = TcpLink(MbapFraming(unit_id=1), "10.0.0.5", 502)
    await link.open(timeout=1.0)
    registers = await link.read("holding", 0, 10, timeout=1.0)   # [int, ...]
    data = await link.read_data("holding", 0, 10, timeout=1.0)   # 20 bytes, big-endian registers
    link.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
from typing import Protocol

from drivers.modbus.reads import FUNCTION_CODES, BlockError, CommError, decode_error, exception_error
from drivers.modbus.rtu_frame import ExceptionReply, FrameError, frame_length, read_request, reply_data, unpack

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length (unit + PDU), unit id
MAX_PDU = 253
EXCEPTION_FLAG = 0x80


def data_bytes(table: str, count: int) -> int:
    """Bytes of data in a normal answer to a read of `count` registers (or bits)."""
    return -(-count // 8) if FUNCTION_CODES[table] <= 2 else 2 * count


async def connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple) -> None:
    """Connect a non-blocking socket. The kernel is asked at once (uvloop's sock_connect may ask only at
    the loop's next turn, which a busy loop delays past the timeout), so that `connected` can tell at the
    timeout whether the device answered in time."""
    error = sock.connect_ex(address)
    if error in (errno.EINPROGRESS, errno.EAGAIN):
        writable = loop.create_future()
        loop.add_writer(sock.fileno(), lambda: writable.done() or writable.set_result(None))
        try:
            await writable
        finally:
            loop.remove_writer(sock.fileno())
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


def connected(sock: socket.socket | None) -> bool:
    """Whether a connect whose timeout fired has completed all the same. A busy event loop (the first scan
    loading the rule kernels, say) can let the timeout fire before it sees a connect the device answered
    in time; that connection counts, as a late-read answer does."""
    if sock is None or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
        return False
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class Framing(Protocol):
    """How requests are framed and answers are found and checked on one kind of wire."""

    def request(self, table: str, start: int, count: int) -> bytes:
        """The request frame; remembers what it asked for."""
        ...

    def answer_length(self, buffer: bytes | bytearray) -> int | None:
        """Length of the answer at the head of `buffer`, None until enough is in; BlockError if it cannot be one."""
        ...

    def parse(self, frame: bytes) -> bytes:
        """The data of a complete answer frame, as on the wire; BlockError for anything but the answer
        to the request."""
        ...


class MbapFraming:
    """Modbus TCP framing (MBAP header + PDU), as on TCP port 502 and in Modbus UDP datagrams."""

    def __init__(self, unit_id: int) -> None:
        self.unit_id = unit_id
        self._tid = 0
        self._asked = ("holding", 0)

    def request(self, table: str, start: int, count: int) -> bytes:
        self._tid = self._tid % 0xFFFF + 1
        self._asked = (table, count)
        pdu = struct.pack(">BHH", FUNCTION_CODES[table], start, count)
        return MBAP.pack(self._tid, 0, len(pdu) + 1, self.unit_id) + pdu

    def answer_length(self, buffer: bytes | bytearray) -> int | None:
        if len(buffer) < MBAP.size:
            return None
        tid, protocol, length, unit = MBAP.unpack_from(buffer)
        if protocol != 0:
            raise decode_error(f"protocol id {protocol}, not 0 (Modbus)")
        if tid != self._tid:
            raise decode_error(f"answer under transaction id {tid}, expected {self._tid}")
        if unit != self.unit_id:
            raise decode_error(f"answer from unit {unit}, expected {self.unit_id}")
        if not 3 <= length <= MAX_PDU + 1:
            raise decode_error(f"MBAP length {length} out of range 3..{MAX_PDU + 1}")
        return MBAP.size - 1 + length

    def parse(self, frame: bytes) -> bytes:
        table, count = self._asked
        return check_pdu(frame[MBAP.size:], table, count)


def check_pdu(pdu: bytes, table: str, count: int) -> bytes:
    """The data of a read answer's PDU (function, byte count, data), checked against the request."""
    function = FUNCTION_CODES[table]
    if pdu[0] == function | EXCEPTION_FLAG:
        if len(pdu) != 2:
            raise decode_error(f"exception answer of {len(pdu)} bytes, expected 2")
        raise exception_error(pdu[1])
    if pdu[0] != function:
        raise decode_error(f"answer with function code {pdu[0]:#04x} to a request with {function:#04x}")
    expected = data_bytes(table, count)
    if pdu[1] != expected or len(pdu) != 2 + expected:
        raise decode_error(f"wrong length: byte count {pdu[1]} in {len(pdu) - 2} data bytes, "
                           f"expected {expected} for {count} {table} values")
    return pdu[2:]


class RtuFraming:
    """RTU frames (unit, PDU, CRC) as serial device servers pass them over TCP."""

    def __init__(self, unit_id: int) -> None:
        self.unit_id = unit_id
        self._asked = ("holding", 0)

    def request(self, table: str, start: int, count: int) -> bytes:
        self._asked = (table, count)
        return read_request(self.unit_id, table, start, count)

    def answer_length(self, buffer: bytes | bytearray) -> int | None:
        try:
            return frame_length(buffer)
        except FrameError as exc:
            raise decode_error(str(exc)) from None

    def parse(self, frame: bytes) -> bytes:
        table, count = self._asked
        try:
            return reply_data(frame, self.unit_id, table, count)
        except ExceptionReply as exc:
            raise exception_error(exc.code) from None
        except FrameError as exc:
            raise decode_error(str(exc)) from None


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the kernel's receive time with each read
ANCILLARY = socket.CMSG_SPACE(16)  # one struct timespec
READ_SIZE = 65536
MAX_KERNEL_AGE = 10.0  # seconds; a kernel stamp older than this (or in the future) means the wall clock stepped


def arrival(ancillary: list[tuple[int, int, bytes]], wall_now: float, monotonic_now: float) -> float:
    """When the bytes reached the host, on the monotonic clock: the kernel's receive stamp (wall clock)
    moved onto the monotonic clock by its age; `monotonic_now` when there is no usable stamp."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            age = wall_now - (seconds + nanoseconds / 1e9)
            if 0.0 <= age < MAX_KERNEL_AGE:
                return monotonic_now - age
    return monotonic_now


class Link:
    """One connection (or UDP socket) to one device with one framing; `read_data` is one checked transaction.

    The socket is read by the event loop as bytes come in, with the kernel's receive time of each
    read (SO_TIMESTAMPNS): `answered_at` is when the last answer `read_data` returned reached the host,
    on the monotonic clock, however late the loop got to it.

    A request is a future (`_answer`) and a timer at its timeout. The reader callback moves what it
    read into the request's buffer and resolves the future with the frame (and the arrival time of
    its last bytes) once the frame is whole, with a BlockError once the bytes cannot be one, with a
    CommError once the connection is lost; the timer reads what is already in the host, then resolves
    it with the frame, garbage or silence. Whichever comes first cancels the other. Bytes read while no
    request is outstanding stay in `_chunks`: the link is out of step.
    """

    kind = socket.SOCK_STREAM

    def __init__(self, framing: Framing, host: str, port: int) -> None:
        self.framing, self.host, self.port = framing, host, port
        self.answered_at = 0.0
        self._socket: socket.socket | None = None
        self._chunks: list[bytes] = []  # read from the socket, not yet taken by a request
        self._arrived = 0.0
        self._lost: str | None = None
        self._answer: asyncio.Future[tuple[bytes, float]] | None = None  # the outstanding request's
        self._buffer = bytearray()  # the outstanding request's answer so far
        self._timer: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._socket is not None and self._lost is None

    @property
    def out_of_step(self) -> bool:
        """Something arrived that no request asked for: the next request needs a fresh link."""
        return bool(self._chunks)

    async def open(self, timeout: float) -> None:
        self.close()
        self._chunks, self._lost = [], None
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                family, kind, protocol, _, address = await self._address(loop)
                sock = socket.socket(family, kind, protocol)
                sock.setblocking(False)
                with contextlib.suppress(OSError):  # without it, arrival falls back to the loop's time
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                await connect(loop, sock, address)
        except TimeoutError:
            if not connected(sock):
                if sock is not None:
                    sock.close()
                raise CommError(f"cannot connect to {self.host}:{self.port} (no answer in time)") from None
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise CommError(f"cannot connect to {self.host}:{self.port} ({exc})") from None
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        self._socket = sock
        loop.add_reader(sock.fileno(), self._on_readable)

    async def _address(self, loop: asyncio.AbstractEventLoop) -> tuple:
        """The address to connect to. An IP address is taken as it is, here: the loop's getaddrinfo runs in
        its shared thread pool, where a device reconnecting after every garbage answer would queue behind
        the others and miss its connect timeout. A host name is resolved there, at every connect."""
        try:
            return socket.getaddrinfo(self.host, self.port, type=self.kind, flags=socket.AI_NUMERICHOST)[0]
        except socket.gaierror:
            return (await loop.getaddrinfo(self.host, self.port, type=self.kind))[0]

    def close(self) -> None:
        """Reset the connection: whatever the device still sends is discarded with it, and no local
        port lingers in TIME_WAIT (a device answering garbage is reconnected after every answer)."""
        if self._socket is not None:
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
            if self.kind == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._socket.close()
            self._socket = None

    async def read(self, table: str, start: int, count: int, timeout: float) -> list[int] | list[bool]:
        """One request and its checked answer as a list: registers as ints, bits (padded to whole bytes)
        as bools. Fails as `read_data`."""
        return unpack(table, await self.read_data(table, start, count, timeout))

    async def read_data(self, table: str, start: int, count: int, timeout: float) -> bytes:
        """One request and its checked answer's data, as on the wire. CommError: no answer; BlockError:
        garbage or an exception."""
        if self._lost is not None or self._socket is None:
            raise CommError(self._lost or "not connected")
        try:
            self._socket.send(self.framing.request(table, start, count))
        except OSError as exc:
            raise CommError(f"connection lost ({exc})") from None
        loop = asyncio.get_running_loop()
        answer = self._answer = loop.create_future()
        self._buffer = bytearray()
        self._timer = loop.call_at(loop.time() + timeout, self._on_timeout, timeout)
        self._settle()  # bytes already read (a link out of step) are this answer's first
        try:
            frame, self.answered_at = await answer
        finally:
            if self._answer is answer:  # cancelled while waiting
                self._answer = None
                self._timer.cancel()
        return self.framing.parse(frame)

    def _on_readable(self) -> None:
        self._receive()
        if self._answer is not None and not self._settle() and self._lost is not None:
            buffered = len(self._buffer)
            self._resolve(CommError(f"{self._lost} after {buffered} bytes" if buffered else self._lost))

    def _receive(self) -> bool:
        """One read from the socket; True when it brought bytes."""
        try:
            data, ancillary, _, _ = self._socket.recvmsg(READ_SIZE, ANCILLARY)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._fail(f"connection lost ({exc})")
            return False
        if not data and self.kind == socket.SOCK_STREAM:
            self._fail("connection closed by the device")
            return False
        self._arrived = arrival(ancillary, time.time(), time.monotonic())
        self._chunks.append(data)
        return True

    def _fail(self, cause: str) -> None:
        self._lost = cause
        asyncio.get_running_loop().remove_reader(self._socket.fileno())  # type: ignore[union-attr]

    def _settle(self) -> bool:
        """Resolve the outstanding request if what arrived is its whole answer or cannot be one; True if so."""
        try:
            frame = self._frame(self._buffer)
        except BlockError as exc:
            self._resolve(exc)
            return True
        if frame is None:
            return False
        self._resolve((frame, self._arrived))
        return True

    def _on_timeout(self, timeout: float) -> None:
        """The timeout: the answer if it is already in the host (a busy event loop can fire the timer
        before it reads an answer that came in time; that answer still counts), else garbage for bytes
        that stop short of a frame, else silence."""
        while self._socket is not None and self._lost is None and self._receive():
            pass
        if self._settle():
            return
        if self._buffer:
            self._resolve(decode_error(f"garbage: {len(self._buffer)} bytes, not a whole answer, "
                                       f"then nothing for {timeout:g} s"))
        else:
            self._resolve(CommError(f"no response within {timeout:g} s"))

    def _resolve(self, outcome: tuple[bytes, float] | Exception) -> None:
        answer, self._answer = self._answer, None
        self._timer.cancel()  # type: ignore[union-attr]
        if answer is None or answer.done():  # cancelled, its task not yet run to take it back
            return
        if isinstance(outcome, Exception):
            answer.set_exception(outcome)  # type: ignore[union-attr]
        else:
            answer.set_result(outcome)  # type: ignore[union-attr]

    def _frame(self, buffer: bytearray) -> bytes | None:
        """Move what arrived into `buffer`; the answer frame once it is whole (trailing bytes stay unread)."""
        while self._chunks:
            buffer += self._chunks.pop(0)
            length = self.framing.answer_length(buffer)
            if length is not None and len(buffer) >= length:
                if len(buffer) > length:
                    self._chunks.insert(0, bytes(buffer[length:]))
                return bytes(buffer[:length])
        return None


class UdpLink(Link):
    """Modbus over UDP: one datagram per request and per answer; a datagram that is not exactly one
    answer frame is garbage. A new socket (a new local port) resynchronises: late datagrams to the
    old one are never read."""

    kind = socket.SOCK_DGRAM

    def _frame(self, buffer: bytearray) -> bytes | None:
        if not self._chunks:
            return None
        datagram = self._chunks.pop(0)
        buffer += datagram
        length = self.framing.answer_length(datagram)
        if length != len(datagram):
            raise decode_error(f"datagram of {len(datagram)} bytes does not hold one whole answer")
        return datagram
