"""A local peer that tries to hold the daemon's descriptors: many idle connections with half-sent requests.

    python -m hil_tests.sim.hoarder --socket PATH --port PORT --count N --report FILE

Opens N connections to the control socket (each sends half a request line) and N to the metrics port
(each sends half an HTTP request head), and keeps them: whatever the daemon closes is opened again, up
to 100 of each kind per sweep, one sweep every 0.2 s, until SIGTERM. Twice a second it writes to FILE
how many of each kind it holds and how many the daemon has closed so far. Run it as another account
to play the unprivileged user of issue 12.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import time
from pathlib import Path

HALF_CONTROL = b'{"cmd": "status", "pad": "'
HALF_HTTP = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SWEEP = 0.2
OPENS_PER_SWEEP = 100  # per endpoint: a steady stream of new tries, not a busy loop


class Kind:
    """The connections of one endpoint: how to open one, and the count of those the daemon ended."""

    def __init__(self, name: str, family: int, address: object, half: bytes, count: int):
        self.name, self.family, self.address, self.half, self.count = name, family, address, half, count
        self.open: dict[int, socket.socket] = {}
        self.closed_by_daemon = 0
        self.opened = 0

    def top_up(self) -> None:
        for _ in range(min(OPENS_PER_SWEEP, self.count - len(self.open))):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):  # a full backlog: try again at the next sweep
                sock.close()
                return
            try:
                sock.send(self.half)
            except OSError:
                pass  # not connected yet (TCP): the bytes follow when it is
            self.open[sock.fileno()] = sock
            self.opened += 1

    def reap(self) -> None:
        """Drop the connections the daemon has closed (readable with nothing, or reset)."""
        poller = select.poll()  # select() stops at descriptor 1024
        for fd in self.open:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(0):
            sock = self.open[fd]
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                del self.open[sock.fileno()]
                sock.close()
                self.closed_by_daemon += 1

    def figures(self) -> dict[str, int]:
        return {"held": len(self.open), "opened": self.opened, "closed_by_daemon": self.closed_by_daemon}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    kinds = [Kind("control", socket.AF_UNIX, str(args.socket), HALF_CONTROL, args.count),
             Kind("metrics", socket.AF_INET, ("127.0.0.1", args.port), HALF_HTTP, args.count)]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    reported = 0.0
    while running[0]:
        for kind in kinds:
            kind.reap()
            kind.top_up()
        if time.monotonic() - reported > 0.5:
            _report(args.report, kinds)
            reported = time.monotonic()
        time.sleep(SWEEP)
    _report(args.report, kinds)


def _report(path: Path, kinds: list[Kind]) -> None:
    """Replace the report whole, so the test never reads it half-written."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({kind.name: kind.figures() for kind in kinds}))
    os.replace(partial, path)


if __name__ == "__main__":
    main()
