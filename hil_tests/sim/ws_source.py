"""A vendor gateway pushing JSON readings over WebSocket (the `websocket` driver's counterpart).

Each client must first send a subscribe message (any text frame); from then on the server sends,
every `--period` seconds, one message per sensor, `{"id": "GD-201", "ch4": 12.5, "ts": <epoch ms>,
"status": "ok"}`, the values a known sequence. Every message sent is appended to `--record` (one
JSON object per line: the payload and whom it went to), so a test can compare what arrived
upstream with what was sent and when. With `--commands`, commands on stdin (each answered
`OK <command>` on stdout; the end of stdin stops the source):

- `drop`: abort every connection (TCP closed, no close frame), as a gateway that reboots;
- `mute`: stop reading from the current connections (so pings go unanswered) while still sending;
- `garbage`: send each client a frame that is not JSON, a binary frame that is not UTF-8, a message
  without the `ch4` field and one whose `ch4` is a string, for sensor GD-201;
- `flood N`: send each client N messages as fast as it takes them, sensor GD-202;
- `pause` / `resume`: stop and restart the periodic messages (the sensors go silent).

`python -m hil_tests.sim.ws_source --port 0 --record sent.jsonl --commands` prints `READY <port>`; with `--cert`
and `--key` it serves wss, and with `--client-ca` only to clients with a certificate of that CA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from hil_tests.sim import serving

SENSORS = ("GD-201", "GD-202")
GARBAGE = ("{not json", b"\xff\xfe\x00 not utf-8", '{"id": "GD-201", "ts": 0, "status": "ok"}',
           '{"id": "GD-201", "ch4": "twelve", "ts": 0, "status": "ok"}')


class Source:
    def __init__(self, record: Path | None, period: float) -> None:
        self.record, self.period = (record.open("a") if record else None), period
        self.clients: set[ServerConnection] = set()
        self.counter = 0
        self.paused = False
        self.sending: set[asyncio.Task] = set()

    def reading(self, sensor: str) -> str:
        self.counter += 1
        value = round(5.0 + (self.counter * 0.75) % 40.0, 2)
        return json.dumps({"id": sensor, "ch4": value, "ts": round(time.time() * 1000), "status": "ok"})

    async def send(self, client: ServerConnection, payload: str | bytes) -> None:
        await client.send(payload)
        text = payload if isinstance(payload, str) else payload.decode("latin-1")
        self.note({"client": id(client), "payload": text})

    def note(self, entry: dict[str, Any]) -> None:
        if self.record is not None:
            self.record.write(json.dumps(entry) + "\n")
            self.record.flush()

    async def handle(self, client: ServerConnection) -> None:
        try:
            subscription = await client.recv()
            self.note({"client": id(client), "subscribed": str(subscription)})
            self.clients.add(client)
            await client.wait_closed()
        finally:
            self.clients.discard(client)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self.paused:
                continue
            for client in list(self.clients):
                for sensor in SENSORS:
                    await self._try(self.send(client, self.reading(sensor)))

    def command(self, line: str) -> str:
        """Apply one stdin command (sends are started, in order): "OK line", or "ERROR line" for none."""
        word, *args = line.split()
        clients = list(self.clients)
        if word == "drop":
            for client in clients:
                client.transport.abort()
        elif word == "mute":
            for client in clients:
                client.transport.pause_reading()
        elif word in ("garbage", "flood"):
            payloads = GARBAGE if word == "garbage" else [self.reading("GD-202") for _ in range(int(args[0]))]
            for client in clients:
                task = asyncio.create_task(self.send_all(client, payloads))
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)
        elif word in ("pause", "resume"):
            self.paused = word == "pause"
        else:
            return f"ERROR {line}"
        return f"OK {line}"

    async def send_all(self, client: ServerConnection, payloads: Any) -> None:
        for payload in payloads:
            await self._try(self.send(client, payload))

    @staticmethod
    async def _try(sending: Any) -> None:
        try:
            await sending
        except Exception:  # noqa: BLE001 - a client that went away mid-send is no error of the source
            pass


async def main(args: argparse.Namespace) -> int:
    source = Source(args.record, args.period)
    context = None
    if args.cert is not None:  # wss, and with --client-ca only for clients with a certificate of that CA
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        if args.client_ca is not None:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    try:
        server = await serve(source.handle, args.host, args.port, ssl=context, ping_interval=None, compression=None)
    except OSError as exc:
        return serving.cannot_listen(args.host, args.port, exc)
    port = server.sockets[0].getsockname()[1] if hasattr(server, "sockets") else args.port

    async def shutdown() -> None:
        server.close()

    stop = serving.stop_on_signals()
    work = [source.tick(), *([serving.read_commands(source.command, stop)] if args.commands else [])]
    return await serving.serve_until_stopped(port, shutdown, *work, stop=stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--period", type=float, default=0.2)
    parser.add_argument("--record", type=Path, help="append every message sent to this file (JSON lines)")
    parser.add_argument("--commands", action="store_true", help="take commands on stdin")
    parser.add_argument("--cert", help="server certificate (PEM): serve wss")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--client-ca", help="require a client certificate issued by this CA")
    raise SystemExit(serving.run(main(parser.parse_args())))
