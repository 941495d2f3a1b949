"""The life of a simulator process, written once: listen, say READY, serve until told to stop, shut down.

The tests start each simulator as a process of its own, read "READY <port>" from its stdout (with
`--port 0` the system picks the port), and end it with SIGTERM (or SIGINT, a Ctrl-C); the exit status is
0 then, and 1 when the port could not be bound.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run a simulator's main coroutine on uvloop; its result is the exit status."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets; call it on the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def cannot_listen(host: str, port: int, exc: BaseException) -> int:
    print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
    return 1


async def start_modbus(server: Any, host: str, port: int) -> bool:
    """Start a pymodbus server in the background; False, said on stderr, when it cannot listen."""
    try:
        await server.serve_forever(background=True)
    except (RuntimeError, OSError) as exc:
        cannot_listen(host, port, exc)
        return False
    return True


async def read_commands(command: Callable[[str], str], stop: asyncio.Event) -> None:
    """Apply each line of stdin with `command`, printing what it answers ("OK line"); end of stdin sets `stop`."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            print(command(line.decode().strip()), flush=True)
    stop.set()


async def serve_until_stopped(ready: object, shutdown: Callable[[], Awaitable[object]],
                              *work: Coroutine[Any, Any, object], stop: asyncio.Event | None = None) -> int:
    """Print "READY <ready>", run `work` (a process model, a command reader) until `stop` is set (by
    SIGTERM or SIGINT unless given), then cancel the work and await `shutdown`. Returns exit status 0."""
    stop = stop if stop is not None else stop_on_signals()
    tasks = [asyncio.create_task(coroutine) for coroutine in work]
    print(f"READY {ready}".rstrip(), flush=True)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await shutdown()
    return 0
