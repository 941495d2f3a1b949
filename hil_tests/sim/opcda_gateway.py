"""A test double of an OpenOPC gateway service: a Pyro5 DA client object in front of a simulated DA server.

    python -m hil_tests.sim.opcda_gateway --port PORT [--host 127.0.0.1] [--server Sim.OPC.DA]

Prints "READY <port>" on stdout once listening (with --port 0 the system picks the port). It runs as
its own process so that tests can kill (SIGKILL), freeze (SIGSTOP) and restart it.

Like the real service it registers a class under the object id `OpcDaClient`; each proxy gets its own
instance (Pyro5 session mode), which must `connect(server, host)` before it may `read(...)`. A read
returns one `(item, value, quality, timestamp)` tuple per item, timestamps as ISO 8601 strings:

- `Random.Real8`, `Random.Int4`, `Square.Bool`: change on every read, quality "Good" (OpenOPC's names);
- `Word.*`: the raw 16-bit DA quality word, as gateways that pass it through send it:
  `Word.Good` 0xC0, `Word.GoodHigh` 0xC2 (high limit bit), `Word.SensorFailure` 0x10,
  `Word.CommFailure` 0x18, `Word.LastKnown` 0x14, `Word.OutOfService` 0x1C, `Word.Uncertain` 0x40,
  `Word.ConfigError` 0x04;
- `Bad.Quality`: quality "Bad"; `Text.Value`: a string with quality "Good";
- any other item: `(item, None, "Error", None)`, as OpenOPC answers for an item the server rejects.
Connecting to any server but `--server` raises an error, as a gateway does for an unknown ProgID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

import Pyro5.server

WORDS = {"Word.Good": 0xC0, "Word.GoodHigh": 0xC2, "Word.SensorFailure": 0x10, "Word.CommFailure": 0x18,
         "Word.LastKnown": 0x14, "Word.OutOfService": 0x1C, "Word.Uncertain": 0x40, "Word.ConfigError": 0x04}
SERVER_PROGID = "Sim.OPC.DA"


@Pyro5.server.expose
@Pyro5.server.behavior(instance_mode="session")
class OpcDaClient:
    """One gateway session: the DA server it is connected to and a read counter driving the values."""

    def __init__(self) -> None:
        self.server: str | None = None
        self.reads = itertools.count()

    def connect(self, opc_server: str | None = None, opc_host: str = "localhost") -> None:
        if opc_server != SERVER_PROGID:
            raise ValueError(f"Connect: cannot connect to OPC server {opc_server!r} on {opc_host}: "
                             "invalid class string")
        self.server = opc_server

    def read(self, tags: Any = None, group: str | None = None, size: int | None = None, pause: int = 0,
             source: str = "hybrid", update: int = -1, timeout: int = 5000, sync: bool = False,
             include_error: bool = False, rebuild: bool = False) -> list[tuple[Any, ...]]:
        if self.server is None:
            raise RuntimeError("read: not connected to an OPC server")
        step = next(self.reads)
        now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
        return [self._reading(tag, step, now) for tag in (tags if isinstance(tags, list) else [tags])]

    @staticmethod
    def _reading(tag: str, step: int, now: str) -> tuple[Any, ...]:
        if tag == "Random.Real8":
            return tag, 50.0 + 10.0 * math.sin(step / 3.0), "Good", now
        if tag == "Random.Int4":
            return tag, step, "Good", now
        if tag == "Square.Bool":
            return tag, step % 2 == 0, "Good", now
        if tag in WORDS:
            return tag, 21.5, WORDS[tag], now
        if tag == "Bad.Quality":
            return tag, 0.0, "Bad", now
        if tag == "Text.Value":
            return tag, "running", "Good", now
        return tag, None, "Error", None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.opcda_gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    daemon = Pyro5.server.Daemon(host=args.host, port=args.port)
    daemon.register(OpcDaClient, objectId="OpcDaClient")
    print(f"READY {daemon.locationStr.rsplit(':', 1)[1]}", flush=True)
    daemon.requestLoop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
