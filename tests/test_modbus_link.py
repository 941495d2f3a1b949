"""The read-only Modbus client: every answer checked against its request, garbage told from silence at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator

import pytest

from drivers.modbus.link import SO_TIMESTAMPNS, Link, MbapFraming, RtuFraming, UdpLink, arrival
from drivers.modbus.reads import BlockError, CommError
from hil_tests.sim.rtu_replies import encode_exception, encode_registers
from core.types import Quality


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def asked(framing: MbapFraming, table: str = "holding", count: int = 2) -> int:
    request = framing.request(table, 10, count)
    assert request[7:] == bytes([{"holding": 3, "input": 4, "coil": 1, "discrete": 2}[table], 0, 10, 0, count])
    return struct.unpack(">H", request[:2])[0]


def answer(framing: MbapFraming, frame: bytes):
    length = framing.answer_length(frame)
    assert length == len(frame)
    return framing.parse(frame)


def test_a_valid_answer_gives_its_data_as_on_the_wire():
    framing = MbapFraming(unit_id=5)
    tid = asked(framing)
    assert answer(framing, mbap(tid, 5, bytes([3, 4, 0, 1, 0xFF, 0xFE]))) == bytes([0, 1, 0xFF, 0xFE])
    tid = asked(framing, "coil", 3)
    assert answer(framing, mbap(tid, 5, bytes([1, 1, 0b101]))) == bytes([0b101])
    assert asked(framing) == tid + 1, "every request has its own transaction id"


@pytest.mark.parametrize("name, build", [
    ("transaction id", lambda tid: mbap(tid + 1, 5, bytes([3, 4, 0, 1, 0, 2]))),
    ("unit", lambda tid: mbap(tid, 6, bytes([3, 4, 0, 1, 0, 2]))),
    ("protocol id", lambda tid: mbap(tid, 5, bytes([3, 4, 0, 1, 0, 2]), protocol=1)),
    ("MBAP length", lambda tid: struct.pack(">HHHB", tid, 0, 600, 5)),
])
def test_a_header_that_does_not_answer_the_request_is_garbage_before_its_body_arrives(name, build):
    framing = MbapFraming(unit_id=5)
    tid = asked(framing)
    with pytest.raises(BlockError, match=name) as caught:
        framing.answer_length(build(tid)[:7])
    assert caught.value.quality == Quality.DECODE_ERROR


@pytest.mark.parametrize("pdu, quality", [
    (bytes([4, 4, 0, 1, 0, 2]), Quality.DECODE_ERROR),  # another function
    (bytes([16, 0, 10, 0, 2]), Quality.DECODE_ERROR),  # a write's answer
    (bytes([3, 2, 0, 1]), Quality.DECODE_ERROR),  # one register instead of two
    (bytes([3, 6, 0, 1, 0, 2]), Quality.DECODE_ERROR),  # byte count disagrees with the data
    (bytes([0x83, 2, 0]), Quality.DECODE_ERROR),  # an exception answer of the wrong length
    (bytes([0x83, 2]), Quality.DEVICE_ERROR),  # illegal data address
    (bytes([0x83, 0x0B]), Quality.COMM_FAILURE),  # the device behind a gateway did not answer
])
def test_a_body_that_does_not_answer_the_request_fails_with_its_reason(pdu, quality):
    framing = MbapFraming(unit_id=5)
    tid = asked(framing)
    with pytest.raises(BlockError) as caught:
        answer(framing, mbap(tid, 5, pdu))
    assert caught.value.quality == quality


def test_rtu_framing_checks_unit_crc_and_length():
    framing = RtuFraming(unit_id=7)
    framing.request("holding", 0, 2)
    assert framing.parse(encode_registers(7, "holding", [1, 2])) == bytes([0, 1, 0, 2])
    for garbage in (encode_registers(8, "holding", [1, 2]), encode_registers(7, "holding", [1]),
                    encode_registers(7, "holding", [1, 2])[:-1] + b"\x00"):
        with pytest.raises(BlockError) as caught:
            framing.parse(garbage)
        assert caught.value.quality == Quality.DECODE_ERROR
    with pytest.raises(BlockError) as caught:
        framing.parse(encode_exception(7, 3, 2))
    assert caught.value.quality == Quality.DEVICE_ERROR
    with pytest.raises(BlockError):
        framing.answer_length(bytes([7, 0x2B, 0]))  # no read reply has that function


async def serve(reply) -> tuple[asyncio.Server, int]:
    """A TCP peer that answers each 12-byte MBAP request with reply(tid) (None: no answer)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readexactly(12)
                frame = reply(struct.unpack(">H", request[:2])[0])
                if frame:
                    writer.write(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def transact(reply, timeout: float = 0.5, link_class=Link):
    """One read over a real loopback connection: (result or exception, link out of step)."""

    async def run():
        server, port = await serve(reply)
        link = link_class(MbapFraming(unit_id=1), "127.0.0.1", port)
        try:
            await link.open(1.0)
            try:
                result = await link.read("holding", 0, 1, timeout)
            except (BlockError, CommError) as exc:
                result = exc
            await asyncio.sleep(0.05)
            return result, link.out_of_step
        finally:
            link.close()
            server.close()

    return asyncio.run(run())


def test_over_tcp_garbage_fails_at_once_and_silence_after_the_timeout():
    # told by its header as it arrives (a discarded frame would only be noticed at the timeout)
    result, _ = transact(lambda tid: mbap(tid + 7, 1, bytes([3, 2, 0, 9])))
    assert isinstance(result, BlockError) and result.quality == Quality.DECODE_ERROR
    assert "transaction id" in str(result)
    result, _ = transact(lambda tid: None, timeout=0.2)
    assert isinstance(result, CommError) and "no response" in str(result)
    result, _ = transact(lambda tid: mbap(tid, 1, bytes([3, 2, 0, 9]))[:5], timeout=0.2)
    assert isinstance(result, BlockError) and "5 bytes, not a whole answer" in str(result)


def test_trailing_bytes_put_the_link_out_of_step():
    result, out_of_step = transact(lambda tid: mbap(tid, 1, bytes([3, 2, 0, 9])) + b"\x00\x01")
    assert result == [9] and out_of_step
    result, out_of_step = transact(lambda tid: mbap(tid, 1, bytes([3, 2, 0, 9])))
    assert result == [9] and not out_of_step


def test_a_udp_datagram_must_hold_exactly_one_answer():
    async def run(reply):
        loop = asyncio.get_running_loop()

        class Peer(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(reply(struct.unpack(">H", data[:2])[0]), addr)

        transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        link = UdpLink(MbapFraming(unit_id=1), "127.0.0.1", transport.get_extra_info("sockname")[1])
        try:
            await link.open(1.0)
            return await link.read("holding", 0, 1, 1.0)
        except BlockError as exc:
            return exc
        finally:
            link.close()
            transport.close()

    assert asyncio.run(run(lambda tid: mbap(tid, 1, bytes([3, 2, 0, 9])))) == [9]
    result = asyncio.run(run(lambda tid: mbap(tid, 1, bytes([3, 2, 0, 9])) + b"\x00"))
    assert isinstance(result, BlockError) and result.quality == Quality.DECODE_ERROR


def test_arrival_is_the_kernels_receive_time_moved_onto_the_monotonic_clock():
    stamp = struct.pack("qq", 1000, 250_000_000)  # 1000.25 s on the wall clock
    ancillary = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)]
    assert arrival(ancillary, wall_now=1000.75, monotonic_now=50.0) == pytest.approx(49.5)
    assert arrival([], wall_now=1000.75, monotonic_now=50.0) == 50.0  # no stamp: when the loop read it
    assert arrival(ancillary, wall_now=999.0, monotonic_now=50.0) == 50.0  # a stamp from the future: clock stepped
    assert arrival(ancillary, wall_now=2000.0, monotonic_now=50.0) == 50.0  # implausibly old: clock stepped


def test_an_answer_that_arrived_while_the_loop_was_busy_keeps_its_arrival_time():
    """The device answers at once; the event loop only gets to it 0.3 s later, after the 0.1 s timeout
    has expired. The answer counts (it came in time), and its read time is its arrival, not the moment
    the loop got round to it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def peer() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(ConnectionResetError):  # the link resets when it closes
            while request := connection.recv(12):
                connection.sendall(mbap(struct.unpack(">H", request[:2])[0], 1, bytes([3, 2, 0, 9])))

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()

    async def run() -> tuple[float, float, float]:
        link = Link(MbapFraming(unit_id=1), "127.0.0.1", listener.getsockname()[1])
        await link.open(1.0)
        try:
            # the kernel turns receive stamps on a moment after the first socket asks for them
            assert await link.read("holding", 0, 1, 5.0) == [9]
            await asyncio.sleep(0.2)
            asked = time.monotonic()
            reading = asyncio.ensure_future(link.read("holding", 0, 1, 0.1))
            await asyncio.sleep(0)  # the request goes out
            time.sleep(0.3)  # the loop is busy elsewhere while the answer comes in
            free = time.monotonic()
            assert await reading == [9]
            return asked, free, link.answered_at
        finally:
            link.close()

    asked, free, answered_at = asyncio.run(run())
    thread.join(5)
    listener.close()
    assert asked <= answered_at < free - 0.2


async def _answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            request = await reader.readexactly(12)
            await script(struct.unpack(">H", request[:2])[0], writer)


@contextlib.asynccontextmanager
async def linked(script) -> AsyncIterator[Link]:
    """A link open to a loopback peer that plays `script(tid, writer)` for each request."""
    server = await asyncio.start_server(lambda reader, writer: _answer_each(reader, writer, script), "127.0.0.1", 0)
    link = Link(MbapFraming(unit_id=1), "127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        await link.open(1.0)
        yield link
    finally:
        link.close()
        server.close()


def converse(script, reads: int = 1, timeout: float = 1.0, after: float = 0.05):
    """Reads of one register over a real loopback connection to a peer that plays `script(tid, writer)`
    for each request: (each read's result or exception, the link out of step `after` seconds later)."""

    async def run():
        results = []
        async with linked(script) as link:
            for _ in range(reads):
                try:
                    results.append(await link.read("holding", 0, 1, timeout))
                except (BlockError, CommError) as exc:
                    results.append(exc)
            await asyncio.sleep(after)
            return results, link.out_of_step

    return asyncio.run(run())


def test_an_answer_in_pieces_is_whole_when_its_last_byte_arrives():
    async def in_pieces(tid, writer):
        frame = mbap(tid, 1, bytes([3, 2, 0, 9]))
        for piece in (frame[:3], frame[3:8], frame[8:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)

    (first, second), out_of_step = converse(in_pieces, reads=2)
    assert first == second == [9] and not out_of_step


def test_a_connection_closed_in_the_middle_of_an_answer_is_no_answer():
    async def cut(tid, writer):
        writer.write(mbap(tid, 1, bytes([3, 2, 0, 9]))[:8])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    (result,), _ = converse(cut)
    assert isinstance(result, CommError) and str(result) == "connection closed by the device after 8 bytes"


def test_an_answer_after_the_timeout_is_never_taken_for_the_next_request():
    async def late(tid, writer):
        await asyncio.sleep(0.3)
        writer.write(mbap(tid, 1, bytes([3, 2, 0, 9])))

    (result,), out_of_step = converse(late, timeout=0.1, after=0.4)
    assert isinstance(result, CommError) and "no response within 0.1 s" in str(result)
    assert out_of_step, "the late answer came with no request outstanding"


def test_a_read_cancelled_while_waiting_leaves_what_comes_after_out_of_step():
    async def slow(tid, writer):
        await asyncio.sleep(0.2)
        writer.write(mbap(tid, 1, bytes([3, 2, 0, 9])))

    async def run():
        async with linked(slow) as link:
            reading = asyncio.ensure_future(link.read("holding", 0, 1, 5.0))
            await asyncio.sleep(0.05)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await asyncio.sleep(0.4)  # the answer comes, and the 5 s timer must not fire on nobody
            return link.out_of_step, link.is_open

    assert asyncio.run(run()) == (True, True)


def test_a_timeout_in_the_same_loop_turn_as_a_cancel_is_no_error():
    """The task cancelled, its future with it, and the timer (or an answer) comes before the task has run
    again: the link lets the request go instead of resolving a future that is already done."""
    async def never(tid, writer):
        await asyncio.sleep(10)

    async def run():
        async with linked(never) as link:
            reading = asyncio.ensure_future(link.read("holding", 0, 1, 5.0))
            await asyncio.sleep(0.05)
            reading.cancel()
            link._on_timeout(5.0)  # the timer's callback, run before the cancelled task's next step
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            return reading.cancelled()

    assert asyncio.run(run())


def test_read_data_gives_the_answers_bytes_and_read_the_registers():
    async def run():
        async def answer(tid, writer):
            writer.write(mbap(tid, 1, bytes([3, 4, 0x12, 0x34, 0xFF, 0xFE])))

        async with linked(answer) as link:
            return await link.read_data("holding", 0, 2, 1.0), await link.read("holding", 0, 2, 1.0)

    assert asyncio.run(run()) == (bytes([0x12, 0x34, 0xFF, 0xFE]), [0x1234, 0xFFFE])
