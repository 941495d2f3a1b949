"""The bounded queue between receiving and decoding, and what it had to drop.

Messages are put as they arrive (MQTT: from paho's network thread; WebSocket: on the event loop);
decoding happens on the event loop, at most `max_messages_per_second`. A sensor flood therefore
waits here, and the queue never holds more than `limit` messages: beyond that the oldest is dropped
(the newest reading of a sensor matters most), counted, and charged to the tags it feeds
(`positions(topic)`, the same routing the decoder uses, without decoding; every tag where messages
carry no routing) with the arrival times of the first and last dropped, so the driver can report
the loss upstream as a `gap` event (`gap_event`). Never silently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from core.types import Event, Priority


class Message(NamedTuple):
    topic: str  # "" where the transport has none
    payload: bytes | str | None  # None: larger than allowed, not kept
    read_at: float  # monotonic time it arrived, where the transport received it


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


def gap_event(device: str, names: Sequence[str], drops: Drops, limit: int, rate: float) -> Event:
    """The readings the full inbox (`limit` messages, decoded at most `rate` a second) dropped, in the
    shape of the store's gap records (docs/uplink.md)."""
    reason = f"more than {limit} messages waited to be decoded (max_messages_per_second {rate:g})"
    tags = {names[position]: [int(count), round(first * 1000), round(last * 1000)]
            for position, (count, first, last) in drops.positions.items()}
    firsts = [entry[1] for entry in tags.values()] or [0]
    lasts = [entry[2] for entry in tags.values()] or [0]
    samples = sum(entry[0] for entry in tags.values())
    return Event(kind="gap", ts=time.time(), source=device, priority=Priority.HIGH,
                 message=f"dropped {drops.messages} messages ({samples} readings of {len(tags)} tags): {reason}",
                 data={"action": "dropped", "reason": reason, "messages": drops.messages, "samples": samples,
                       "first_ts": min(firsts), "last_ts": max(lasts), "tags": tags})
