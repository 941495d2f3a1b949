"""Bounds on what an OPC UA server can make the client hold: message size, chunk count, chunk size.

Left to itself, asyncua's client announces no limit in its Hello, then takes the limits the server
acknowledges as its own (a server answering 0 means "no limit"), and buffers a chunk whole before it
looks at the size its header announces (up to 4 GiB). A faulty or hostile server could so make the
gateway's memory grow until the kernel kills it, stopping every other device. `TransportGuard`:

- announces `max_message_size` and `max_chunk_count` in the Hello, so that a conforming server
  answers BadResponseTooLarge instead of sending more;
- keeps both limits whatever the server acknowledges (`BoundedLimits`);
- refuses a chunk whose header announces more than `max_message_size` before buffering its body.

A refusal fails the pending requests and closes the connection, as asyncua does for its own limits;
`refusal` then says what the server sent, for the device's `device_down` cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.common.connection import TransportLimits

HEADER_SIZE = 8  # message type (3), chunk type (1), then the chunk's size (UInt32, little-endian)


@dataclass
class BoundedLimits(TransportLimits):
    """asyncua's limits, with the message size and chunk count checked against the guard's own bounds,
    which no Acknowledge can raise."""

    guard: TransportGuard | None = None

    def is_msg_size_within_limit(self, sz: int) -> bool:
        if sz <= self.guard.max_message_size:
            return True
        self.guard.refuse(f"server sent a message of more than max_message_size ({self.guard.max_message_size} "
                          "bytes)")
        return False

    def is_chunk_count_within_limit(self, sz: int) -> bool:
        if sz <= self.guard.max_chunk_count:
            return True
        self.guard.refuse(f"server sent a message in more than max_chunk_count ({self.guard.max_chunk_count}) "
                          "chunks")
        return False


class TransportGuard:
    """Installed on one `asyncua.Client` before it connects; one guard per session."""

    def __init__(self, max_message_size: int, max_chunk_count: int) -> None:
        self.max_message_size, self.max_chunk_count = max_message_size, max_chunk_count
        self.refusal: str | None = None

    def refuse(self, reason: str) -> None:
        if self.refusal is None:
            self.refusal = f"refused: {reason}"

    def install(self, client: Client) -> None:
        client.max_messagesize, client.max_chunkcount = self.max_message_size, self.max_chunk_count
        uaclient = client.uaclient
        make_protocol = uaclient._make_protocol  # the factory asyncua hands to create_connection

        def bounded_protocol():
            protocol = make_protocol()
            limits = protocol._connection._limits
            protocol._connection._limits = BoundedLimits(limits.max_recv_buffer, limits.max_send_buffer,
                                                         self.max_chunk_count, self.max_message_size, self)
            receive = protocol.data_received

            def data_received(data: bytes) -> None:
                receive(data)
                self._check_pending(protocol)

            protocol.data_received = data_received
            return protocol

        uaclient._make_protocol = bounded_protocol

    def _check_pending(self, protocol) -> None:
        """asyncua keeps an incomplete chunk in `receive_buffer` until its announced size has arrived:
        refuse it as soon as its header shows that it would not fit in a message."""
        pending = protocol.receive_buffer
        if not pending or len(pending) < HEADER_SIZE:
            return
        size = int.from_bytes(pending[4:HEADER_SIZE], "little")
        if size <= self.max_message_size:
            return
        self.refuse(f"server announced a chunk of {size} bytes, more than max_message_size "
                    f"({self.max_message_size} bytes)")
        protocol.receive_buffer = None
        protocol._fail_all_pending(ua.UaStatusCodeError(ua.StatusCodes.BadResponseTooLarge))
        protocol.disconnect_socket()
