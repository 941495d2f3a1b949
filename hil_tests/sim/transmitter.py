"""A level transmitter behind a Modbus TCP interface that a test can freeze, mute, and ask what it served.

    python -m hil_tests.sim.transmitter --port PORT [--host 127.0.0.1]

Holding register 0 is the reading: it goes up by one with every answered read, so each read sees a new
value, until the test freezes it (a stuck transmitter: the reading stays, reads are still answered).
Holding register 1 is a steady 500. Written without pymodbus, from the Modbus TCP specification: read
holding registers (function 3) only; anything else is answered with an exception.

Commands, one a line on stdin, each answered with one line on stdout:
    freeze / thaw    stop / resume changing the reading
    mute / speak     stop / resume answering (requests are read and dropped, as by a dead interface)
    stats            JSON: {"answered": [Unix time of each answered read], "ignored": n,
                     "frozen": bool, "value": reading}
Prints "READY <port>" first, once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import Sequence

READ_HOLDING = 3
REGISTERS = 2
STEADY = 500
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS = 1, 2


class Transmitter:
    def __init__(self) -> None:
        self.reading = 1000
        self.frozen = self.muted = False
        self.answered: list[float] = []
        self.ignored = 0

    def answer(self, pdu: bytes) -> bytes:
        """The PDU answering one request PDU; a read advances the reading unless frozen."""
        function = pdu[0]
        if function != READ_HOLDING or len(pdu) != 5:
            return bytes([function | 0x80, ILLEGAL_FUNCTION])
        address, count = struct.unpack(">HH", pdu[1:5])
        if count < 1 or address + count > REGISTERS:
            return bytes([function | 0x80, ILLEGAL_ADDRESS])
        registers = [self.reading, STEADY][address:address + count]
        if not self.frozen:
            self.reading = (self.reading + 1) % 65536
        self.answered.append(time.time())
        return bytes([function, 2 * count]) + struct.pack(f">{count}H", *registers)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                if self.muted:
                    self.ignored += 1
                    continue
                reply = self.answer(pdu)
                writer.write(struct.pack(">HHHB", tid, protocol, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def command(self, line: str) -> str:
        match line.strip():
            case "freeze" | "thaw" as word:
                self.frozen = word == "freeze"
            case "mute" | "speak" as word:
                self.muted = word == "mute"
            case "stats":
                return json.dumps({"answered": self.answered, "ignored": self.ignored, "frozen": self.frozen,
                                   "value": self.reading})
            case other:
                return f"unknown command {other!r}"
        return "ok"


async def serve(args: argparse.Namespace) -> int:
    transmitter = Transmitter()
    server = await asyncio.start_server(transmitter.serve, args.host, args.port)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        while line := await commands.readline():  # the test closing stdin ends the simulator
            print(transmitter.command(line.decode()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.transmitter", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    return asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
