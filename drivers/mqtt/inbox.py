"""The bounded queue between paho's network thread and the event loop, and what it had to drop.

paho hands each message over from its own thread; decoding happens on the event loop, at most
`max_messages_per_second`. A sensor flood therefore waits here, and the queue never holds more than
`limit` messages: beyond that the oldest is dropped (the newest reading of a sensor matters most),
counted, and charged to the tags its topic feeds (`positions(topic)`, the same routing the decoder
uses, without decoding) with the arrival times of the first and last dropped, so the driver can
report the loss upstream as a `gap` event. Never silently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Message(NamedTuple):
    topic: str
    payload: bytes
    read_at: float  # monotonic time it arrived, on paho's thread


class Drops(NamedTuple):
    """Messages dropped since the last `take_drops`; per position [count, first wall ts, last wall ts]."""

    messages: int
    positions: dict[int, list[float]]


class Inbox:
    def __init__(self, limit: int, positions: Callable[[str], Sequence[int]], wall: Callable[[], float] = time.time):
        self.limit = limit
        self._positions, self._wall = positions, wall
        self._queue: deque[Message] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._dropped_at: dict[int, list[float]] = {}
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: Message) -> bool:
        """Queue a message (paho's thread); True when the queue was empty before (the loop needs waking)."""
        with self._lock:
            was_empty = not self._queue
            self._queue.append(message)
            if len(self._queue) > self.limit:
                self._drop(self._queue.popleft())
            return was_empty

    def take(self, count: int) -> list[Message]:
        """Up to `count` messages, oldest first (the event loop)."""
        with self._lock:
            return [self._queue.popleft() for _ in range(min(count, len(self._queue)))]

    def take_drops(self) -> Drops | None:
        with self._lock:
            if not self._dropped:
                return None
            drops = Drops(self._dropped, self._dropped_at)
            self._dropped, self._dropped_at = 0, {}
            return drops

    def _drop(self, message: Message) -> None:
        self._dropped += 1
        self.dropped_total += 1
        at = self._wall() - (time.monotonic() - message.read_at)
        for position in self._positions(message.topic):
            entry = self._dropped_at.setdefault(position, [0, at, at])
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], at), max(entry[2], at)
