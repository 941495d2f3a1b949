"""A hostile OPC DA bridge: speaks Pyro5's wire protocol itself to answer in ways a real bridge would not.

    python -m hil_tests.sim.hostile_bridge --port PORT --answer marshal-handshake|marshal-read|oversized

Prints "READY <port>" once listening. Each connection's handshake and calls are read as Pyro5 frames;
the answers are built by hand:

- `marshal-handshake`: the handshake is answered in marshal (serializer id 3), which Pyro5's client
  would decode with marshal;
- `marshal-read`: the handshake is answered in serpent like a real bridge, the `connect` call too,
  and the group read in marshal;
- `oversized`: the handshake answer's header announces 1 GiB, and the bridge then streams zeros
  as fast as the gateway takes them, up to that size (what a client without a limit would buffer).

It counts nothing and keeps no state between connections: the driver's device error says what it saw.
"""

from __future__ import annotations

import argparse
import marshal
import socket
import struct
import sys
import threading
from collections.abc import Sequence

import Pyro5.protocol
import Pyro5.serializers

SERPENT = Pyro5.serializers.serializers["serpent"]
MARSHAL_ID = Pyro5.serializers.serializers["marshal"].serializer_id
ANNOUNCED = 1 << 30
METADATA = {"methods": ["connect", "read"], "oneway": [], "attrs": []}


class Connection:
    """The `recv(size)` Pyro5's frame reader expects, over a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return data


def frame(msgtype: int, seq: int, serializer_id: int, payload: bytes) -> bytes:
    return Pyro5.protocol.SendingMessage(msgtype, 0, seq, serializer_id, payload).data


def serve(sock: socket.socket, answer: str) -> None:
    connection = Connection(sock)
    with sock:
        try:
            hello = Pyro5.protocol.recv_stub(connection)
            if answer == "marshal-handshake":
                reply = marshal.dumps({"handshake": "hello", "meta": METADATA})
                sock.sendall(frame(Pyro5.protocol.MSG_CONNECTOK, hello.seq, MARSHAL_ID, reply))
            elif answer == "oversized":
                header = frame(Pyro5.protocol.MSG_CONNECTOK, hello.seq, SERPENT.serializer_id, b"")
                data_size_at = 12  # '!4sHBBHHII16sHH': tag, version, type, serializer, flags, seq; data size
                sock.sendall(header[:data_size_at] + struct.pack("!I", ANNOUNCED) + header[data_size_at + 4:])
                zeros = bytes(1 << 20)
                for _ in range(ANNOUNCED >> 20):
                    sock.sendall(zeros)
            else:  # marshal-read
                reply = SERPENT.dumps({"handshake": "hello", "meta": METADATA})
                sock.sendall(frame(Pyro5.protocol.MSG_CONNECTOK, hello.seq, SERPENT.serializer_id, reply))
                connect = Pyro5.protocol.recv_stub(connection)
                sock.sendall(frame(Pyro5.protocol.MSG_RESULT, connect.seq, SERPENT.serializer_id,
                                   SERPENT.dumps(None)))
                read = Pyro5.protocol.recv_stub(connection)
                sock.sendall(frame(Pyro5.protocol.MSG_RESULT, read.seq, MARSHAL_ID,
                                   marshal.dumps([("Random.Real8", 1.0, "Good", None)])))
            sock.recv(1)  # until the gateway hangs up
        except OSError:
            pass  # the gateway hung up, which is what a refusal looks like from here


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.hostile_bridge",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--answer", choices=["marshal-handshake", "marshal-read", "oversized"], required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    listener = socket.create_server(("127.0.0.1", args.port))
    print(f"READY {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock, args.answer), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
