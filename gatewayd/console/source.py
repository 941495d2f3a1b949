"""What the console shows, read from the daemon's control socket: a view-role client, nothing more.

`DaemonLink` sends one request at a time on a connection of its own (reopened when the daemon closed
it); `Poller` asks for status, points, alarms (all, NORM included, so the page can list limits), who
shelved which alarm, interlocks and bypass authorizations every `poll_interval`, and at once when
an event arrives on a `tail --events-only` stream, so a new alarm reaches the page within a scan tick.
Each refresh becomes a new `Snapshot` (its JSON encoded once, whatever the number of browsers) and
wakes the page streams. When the daemon cannot be reached the snapshot keeps the last figures and
says so in `error`: the page shows the daemon unreachable instead of freezing on old values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("gatewayd.console")

REQUESTS = {  # snapshot key -> the view-role request that fills it
    "status": {"cmd": "status"},
    "points": {"cmd": "points"},
    "alarms": {"cmd": "alarms", "all": True},
    "alarm_actions": {"cmd": "alarm_actions"},
    "interlocks": {"cmd": "interlocks"},
    "bypasses": {"cmd": "bypass_list"},
}
ANSWER_TIMEOUT = 10.0  # seconds the daemon has to answer one request
RETRY = 2.0  # seconds between attempts to reach a daemon that does not answer


class LinkError(RuntimeError):
    """The daemon cannot be reached or refused a request; the message says which and why."""


class DaemonLink:
    """Requests on one control-socket connection, one at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def call(self, request: dict[str, Any]) -> Any:
        async with self._lock:
            for attempt in (1, 2):  # the daemon closes an idle connection: one fresh try
                try:
                    reader, writer = await self._connection()
                    writer.write((json.dumps(request) + "\n").encode())
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT)
                    if not line:
                        raise ConnectionResetError("the daemon closed the connection")
                    break
                except (OSError, TimeoutError) as exc:
                    self.close()
                    if attempt == 2:
                        raise LinkError(f"cannot reach gatewayd on {self.path}: {exc}") from None
        answer = json.loads(line)
        if not answer.get("ok"):
            raise LinkError(f"gatewayd refused {request['cmd']}: {answer.get('error')}")
        return answer.get("result")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=64 * 1024 * 1024), ANSWER_TIMEOUT)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass(frozen=True)
class Snapshot:
    """One refresh: the daemon's answers, when they were taken, and the JSON the page is sent."""

    version: int
    data: dict[str, Any]
    json: bytes


class Poller:
    """Keeps `snapshot` fresh; `await poller.changed(version)` waits for a newer one."""

    def __init__(self, link: DaemonLink, interval: float):
        self.link, self.interval = link, interval
        self.snapshot = Snapshot(0, {"error": "not asked yet", "taken": None}, b"{}")
        self._wake = asyncio.Event()
        self._new = asyncio.Condition()

    async def run(self) -> None:
        events = asyncio.create_task(self._follow_events(), name="console-events")
        try:
            while True:
                await self.refresh()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events

    async def refresh(self) -> None:
        data = dict(self.snapshot.data)
        try:
            for key, request in REQUESTS.items():
                data[key] = await self.link.call(request)
            data["error"] = None
        except LinkError as exc:
            if data.get("error") != str(exc):
                log.warning("%s", exc)
            data["error"] = str(exc)
        data["taken"] = time.time()
        body = json.dumps(finite(data), allow_nan=False).encode()
        async with self._new:
            self.snapshot = Snapshot(self.snapshot.version + 1, data, body)
            self._new.notify_all()

    async def changed(self, version: int, timeout: float) -> Snapshot:
        """A snapshot newer than `version`, or the current one after `timeout` seconds."""
        async with self._new:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait_for(lambda: self.snapshot.version > version), timeout)
            return self.snapshot

    async def _follow_events(self) -> None:
        """An event (an alarm, a device down, an operator action) makes the next refresh start now."""
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.link.path)),
                                                        ANSWER_TIMEOUT)
                try:
                    writer.write(b'{"cmd": "tail", "events_only": true}\n')
                    await writer.drain()
                    while line := await reader.readline():
                        answer = json.loads(line)
                        if not answer.get("ok"):
                            log.warning("gatewayd refused the event stream: %s", answer.get("error"))
                            break
                        if (answer.get("result") or {}).get("type") == "event":
                            self._wake.set()
                finally:
                    writer.close()
            except (OSError, TimeoutError, ValueError):
                pass  # the daemon is away: the poll says so; try again shortly
            await asyncio.sleep(RETRY)


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: the daemon's JSON may carry them, a browser's parser refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value
