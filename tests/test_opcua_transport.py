"""OPC UA message bounds on asyncua's own client protocol object: limits an Acknowledge cannot lift, and a
chunk refused from its header before its body is buffered (what no well-behaved server sends)."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua

from drivers.opcua.transport import TransportGuard

LIMIT, CHUNKS = 65_536, 8


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def guarded_protocol() -> tuple[TransportGuard, object, RecordingTransport, Client]:
    client = Client("opc.tcp://127.0.0.1:4840")
    guard = TransportGuard(LIMIT, CHUNKS)
    guard.install(client)
    protocol = client.uaclient._make_protocol()  # what asyncua hands to create_connection
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return guard, protocol, transport, client


def chunk_header(size: int) -> bytes:
    return b"MSGF" + size.to_bytes(4, "little") + (1).to_bytes(4, "little")


def test_the_hello_announces_the_limits_and_no_acknowledge_lifts_them():
    guard, protocol, _, client = guarded_protocol()
    assert (client.max_messagesize, client.max_chunkcount) == (LIMIT, CHUNKS)
    limits = protocol._connection._limits
    limits.update_client_limits(ua.Acknowledge(ReceiveBufferSize=65535, SendBufferSize=65535, MaxMessageSize=0,
                                               MaxChunkCount=0))  # 0: "no limit", says the server
    assert limits.is_msg_size_within_limit(LIMIT) and limits.is_chunk_count_within_limit(CHUNKS)
    assert guard.refusal is None
    assert not limits.is_chunk_count_within_limit(CHUNKS + 1)
    assert guard.refusal == f"refused: server sent a message in more than max_chunk_count ({CHUNKS}) chunks"
    assert not limits.is_msg_size_within_limit(LIMIT + 1)
    assert guard.refusal.startswith("refused: server sent a message in"), "the first refusal is the cause"


@pytest.mark.parametrize("split", [3, 8, 200])
def test_a_chunk_announcing_more_than_the_limit_is_refused_from_its_header(split: int):
    async def scenario() -> None:
        guard, protocol, transport, _ = guarded_protocol()
        pending = asyncio.get_running_loop().create_future()
        protocol._callbackmap[1] = pending
        data = chunk_header(2**31) + bytes(1000)
        protocol.data_received(data[:split])
        assert (guard.refusal is None) == (split < 8), "refused once the header is complete, not before"
        if guard.refusal is None:
            protocol.data_received(data[split:])
        assert guard.refusal == ("refused: server announced a chunk of 2147483648 bytes, more than "
                                 f"max_message_size ({LIMIT} bytes)")
        assert transport.closed and protocol.receive_buffer is None
        with pytest.raises(ua.UaStatusCodeError) as caught:
            pending.result()
        assert caught.value.code == ua.StatusCodes.BadResponseTooLarge

    asyncio.run(scenario())


def test_a_chunk_of_exactly_the_limit_is_waited_for():
    guard, protocol, transport, _ = guarded_protocol()
    protocol.data_received(chunk_header(LIMIT) + bytes(100))
    assert guard.refusal is None and not transport.closed
    assert len(protocol.receive_buffer) == 112
