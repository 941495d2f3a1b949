"""The `websocket` device kind at run time: receive, queue within bounds, decode, keep every tag honest.

One task holds the connection (the `websockets` asyncio client): connect (TLS verified for wss),
send the `subscribe` message, then put every frame with its arrival time into a bounded queue.
Another decodes the queue at most `max_messages_per_second`. Beyond `queue_limit` waiting messages
the oldest is dropped; drops become a `gap` event upstream (at most one per GAP_REPORT_SPACING, and
one at stop), each dropped message charged to every tag of the device, since it was never decoded
and any of them may have been in it.

Decoding (`drivers.jsonmap`, shared with MQTT): a message goes to each tag whose `match`
pairs it carries (every message, for a tag without `match`). A tag's value with its status's
quality, source time and arrival time (`read_at`) is written; a reading stamped earlier than the
newest of its tag is kept with that source time, UNCERTAIN, counted in `out_of_order`; a missing or
unusable value, timestamp or status is DECODE_ERROR for that tag alone (its last value kept). A
frame that is not JSON is DECODE_ERROR for the tags without `match` (the only ones it surely was
for). Every DECODE_ERROR is counted in `decode_errors` and logged once per tag until it clears.

Up and down are the connection's: up once connected and the subscribe message sent, down when it
cannot connect, the handshake fails, a pong does not come within `ping_timeout` or the connection
closes (`device_down` with the cause, every tag COMM_FAILURE until its next reading); reconnects
follow the kit's Backoff. A tag whose sensor stops sending turns STALE after its `stale_after`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import numpy as np

from drivers.kit import Backoff, DeviceHealth, DriverStats, Problems
from drivers.jsonmap import BadDocument, JsonMapping, decode_document
from drivers.sourceorder import SourceOrder
from drivers.websocket.config import WebSocketSettings
from core.types import Event, Priority, Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.websocket")

SLICE = 500  # messages decoded before the loop is given back to other tasks
GAP_REPORT_SPACING = 5.0  # seconds between two gap events of one device during a flood


@dataclass
class WebSocketStats(DriverStats):
    """The kit's figures (`polls`: messages decoded; `decode_errors`: frames and tag readings that did
    not decode; `reconnects`: connections after the first) and the queue's and order's own."""

    messages_dropped: int = 0  # messages the full queue dropped (reported as gap events)
    out_of_order: int = 0  # readings older than the newest of their tag, kept and flagged UNCERTAIN


class Frame(NamedTuple):
    payload: bytes | str
    read_at: float  # monotonic time it was received


class BoundedQueue:
    """Frames waiting to be decoded, at most `limit`; the oldest dropped beyond, with when they arrived."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[Frame] = deque()
        self.dropped_total = 0
        self.dropped: list[float] = []  # wall times of the frames dropped since the last report
        self.arrived = asyncio.Event()

    def put(self, frame: Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) > self.limit:
            lost = self.frames.popleft()
            self.dropped_total += 1
            self.dropped.append(time.time() - (time.monotonic() - lost.read_at))
        self.arrived.set()

    def take(self, count: int) -> list[Frame]:
        return [self.frames.popleft() for _ in range(min(count, len(self.frames)))]

    def take_dropped(self) -> list[float]:
        dropped, self.dropped = self.dropped, []
        return dropped


def tls_context(settings: WebSocketSettings) -> ssl.SSLContext | None:
    """For wss: the server's certificate and name verified (system CAs unless ca_file), client cert if set."""
    if not settings.secure:
        return None
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.cert_file is not None:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


class WebSocketDriver:
    """Receives one WebSocket connection's JSON messages into a SampleSink. Figures in `stats`."""

    def __init__(self, name: str, settings: WebSocketSettings, timeout: float, mappings: list[JsonMapping],
                 names: list[str], rows: np.ndarray) -> None:
        self.name, self.settings, self.timeout = name, settings, timeout
        self.mappings, self.names = list(mappings), list(names)
        self.rows = np.asarray(rows, dtype=np.intp)
        self.unmatched = [position for position, mapping in enumerate(self.mappings) if not mapping.match]
        self._stats = WebSocketStats()
        self.health = DeviceHealth(name, settings.where, log, label=f"device {name} ({settings.where['url']})")
        self.problems = Problems(log, f"device {name}")
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.queue = BoundedQueue(settings.queue_limit)
        self.order = SourceOrder(len(self.mappings))
        self._troubled: set[Any] = set()

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> Self:
        return cls(device.name, device.settings, device.timeout, [tag.address for tag in device.tags],
                   [tag.name for tag in device.tags], rows)

    @property
    def stats(self) -> WebSocketStats:
        self._stats.messages_dropped = self.queue.dropped_total
        return self._stats

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        decoder = asyncio.create_task(self._decode_forever(sink), name=f"{self.name} decoder")
        try:
            await self._receive_forever(sink)
        finally:
            decoder.cancel()
            self._report_gap(sink)  # never silently, also when stopped in the middle of a flood

    # --- the connection ----------------------------------------------------------------------------

    async def _receive_forever(self, sink: SampleSink) -> None:
        # imported when a connection is made, not with the module: the decoding (and every test of it,
        # and of the driver contract) does not need the WebSocket stack, like check-config
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        settings, context = self.settings, tls_context(self.settings)
        connections = 0
        while True:
            try:
                async with connect(settings.url, ssl=context, open_timeout=self.timeout, close_timeout=self.timeout,
                                   ping_interval=settings.ping_interval, ping_timeout=settings.ping_timeout,
                                   max_size=settings.max_payload, compression=None, proxy=None) as connection:
                    if settings.subscribe is not None:
                        await connection.send(settings.subscribe)
                    self._stats.reconnects += connections > 0
                    connections += 1
                    self.backoff.reset()
                    self.health.up(sink)
                    async for payload in connection:
                        self.queue.put(Frame(payload, time.monotonic()))
                    cause = closed_cause(connection.close_code, connection.close_reason)
            except ConnectionClosed as exc:
                cause = closed_cause(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "",
                                     exc.sent.code if exc.sent else None, exc.sent.reason if exc.sent else "")
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                cause = f"cannot connect: {type(exc).__name__}: {exc}"
            self._down(sink, cause)
            await asyncio.sleep(self.backoff.next())

    def _down(self, sink: SampleSink, cause: str) -> None:
        self._stats.failures += 1
        if not self.health.is_down:
            sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
        self.health.down(sink, cause, Quality.COMM_FAILURE)

    # --- decoding ----------------------------------------------------------------------------------

    async def _decode_forever(self, sink: SampleSink) -> None:
        rate = self.settings.max_messages_per_second
        tokens, refilled = rate, time.monotonic()
        next_gap_report = refilled
        while True:
            now = time.monotonic()
            tokens, refilled = min(rate, tokens + (now - refilled) * rate), now
            if tokens >= 1 and self.queue.frames:
                frames = self.queue.take(min(SLICE, int(tokens)))
                tokens -= len(frames)
                for frame in frames:
                    self.decode(sink, frame)
            if now >= next_gap_report and self._report_gap(sink):
                next_gap_report = now + GAP_REPORT_SPACING
            if self.queue.frames:
                await asyncio.sleep(0 if tokens >= 1 else (1 - tokens) / rate)
                continue
            self.queue.arrived.clear()
            try:
                await asyncio.wait_for(self.queue.arrived.wait(), GAP_REPORT_SPACING)
            except TimeoutError:
                pass

    def decode(self, sink: SampleSink, frame: Frame) -> None:
        """One message into the tags it is for."""
        self._stats.polls += 1
        try:
            document = decode_document(frame.payload)
        except BadDocument as exc:
            self._stats.decode_errors += 1
            self._bad(sink, self.unmatched, frame.read_at, "frame", str(exc))
            return
        self._clear("frame", "frames decode again")
        for position, mapping in enumerate(self.mappings):
            if mapping.match and not mapping.selects(document):
                continue
            reading = mapping.read(document)
            if reading.problem is not None:
                self._stats.decode_errors += 1
                self._bad(sink, [position], frame.read_at, position, f"tag {self.names[position]}: {reading.problem}")
                continue
            quality = reading.quality
            if not math.isnan(reading.source_ts) and self.order.late(position, reading.source_ts):
                self._stats.out_of_order += 1
                quality = Quality.UNCERTAIN if quality == Quality.GOOD else quality
                self.problems.note(("late", position), f"tag {self.names[position]}: a reading stamped "
                                   f"{reading.source_ts:.3f} arrived after a newer one; kept UNCERTAIN")
            else:
                self._clear(position, f"tag {self.names[position]} decodes again")
            sink.write(self.rows[[position]], np.array([reading.value]), int(quality),
                       source_ts=None if math.isnan(reading.source_ts) else reading.source_ts,
                       read_at=frame.read_at)

    def _bad(self, sink: SampleSink, positions: list[int], read_at: float, key: Any, problem: str) -> None:
        if positions:
            sink.set_quality(self.rows[positions], int(Quality.DECODE_ERROR), read_at=read_at)
        self._troubled.add(key)
        self.problems.note(key, problem)

    def _clear(self, key: Any, message: str) -> None:
        if key in self._troubled:
            self._troubled.discard(key)
            self.problems.clear(key, message)

    def _report_gap(self, sink: SampleSink) -> bool:
        """The messages the full queue dropped since the last report, in the shape of the store's gap
        records (docs/uplink.md); False when there were none."""
        dropped = self.queue.take_dropped()
        if not dropped:
            return False
        first, last = round(min(dropped) * 1000), round(max(dropped) * 1000)
        reason = (f"more than {self.settings.queue_limit} messages waited to be decoded "
                  f"(max_messages_per_second {self.settings.max_messages_per_second:g})")
        log.warning("device %s: dropped %d messages: %s", self.name, len(dropped), reason)
        sink.event(Event(kind="gap", ts=time.time(), source=self.name, priority=Priority.HIGH,
                         message=f"dropped {len(dropped)} messages: {reason}",
                         data={"action": "dropped", "reason": reason, "messages": len(dropped),
                               "samples": len(dropped) * len(self.names), "first_ts": first, "last_ts": last,
                               "tags": {name: [len(dropped), first, last] for name in self.names}}))
        return True


def closed_cause(code: int | None, reason: str, sent_code: int | None = None, sent_reason: str = "") -> str:
    """Why a connection ended, as the close frames say (1011 "keepalive ping timeout": no pong in time)."""
    if code is None and sent_code is None:
        return "connection lost without a close frame"
    if code is None:
        return f"connection closed by the gateway: {sent_code} {sent_reason}".rstrip()
    return f"connection closed by the server: {code} {reason}".rstrip()
