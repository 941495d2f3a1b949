"""A simulator run as a real child process that announces its port, as the driver tests start them.

The child prints `READY <port>` once it listens. It starts on port 0 and keeps the port it got, so
a restart after SIGKILL comes back where the driver expects the device, like a PLC after a power cut.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


PYTHON_MODULE = (sys.executable, "-m")


class SimProcess:
    """`python -m <command> --port <port> <options>` (or another `launcher`, e.g. ("node",) for a script of
    another stack); port 0 on first start, the same port on restarts."""

    def __init__(self, command: list[str], options: list[str], what: str,
                 launcher: tuple[str, ...] = PYTHON_MODULE) -> None:
        self.command, self.options, self.what, self.launcher = command, options, what, launcher
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> SimProcess:
        argv = [*self.launcher, *self.command, "--port", str(self.port), *self.options]
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("READY "), f"{self.what} did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def signal(self, signum: int) -> None:
        """Send a signal; after SIGKILL, also reap the child so the port is free for a restart."""
        self.process.send_signal(signum)
        if signum == signal.SIGKILL:
            self.process.wait(timeout=5)

    def close(self) -> None:
        """Kill the child if it still runs, frozen (SIGSTOP) or not."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=5)
