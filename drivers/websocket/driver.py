"""The `websocket` device kind at run time: receive, queue within bounds, decode, keep every tag honest.

One task holds the connection (the `websockets` asyncio client): connect (TLS verified for wss),
send the `subscribe` message, then put every frame with its arrival time into a bounded queue.
Another decodes the queue at most `max_messages_per_second`. The queue is the MQTT driver's
(`drivers.inbox`): beyond `queue_limit` waiting messages the oldest is dropped; drops become a
`gap` event upstream (at most one per GAP_REPORT_SPACING, and one at stop), each dropped message
charged to every tag of the device, since it was never decoded and any of them may have been in it.

Decoding (`drivers.jsonmap`, and `drivers.intake`, both shared with MQTT): a message goes
to each tag whose `match` pairs it carries (every message, for a tag without `match`). A tag's
value with its status's quality, source time and arrival time (`read_at`) is written; a reading
stamped earlier than the newest of its tag is kept with that source time, UNCERTAIN, counted in
`out_of_order`; a missing or unusable value, timestamp or status is DECODE_ERROR for that tag alone
(its last value kept). A frame that is not JSON is DECODE_ERROR for the tags without `match` (the
only ones it surely was for; counted once when there are none). Every DECODE_ERROR is counted in
`decode_errors` and logged once per tag until it clears.

Up and down are the connection's: up once connected and the subscribe message sent, down when it
cannot connect, the handshake fails, a pong does not come within `ping_timeout` or the connection
closes (`device_down` with the cause, every tag COMM_FAILURE until its next reading); reconnects
follow the kit's Backoff. A tag whose sensor stops sending turns STALE after its `stale_after`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Self

import numpy as np

from core.types import Quality, SampleSink
from drivers.inbox import Inbox, Message, gap_event
from drivers.intake import InboundStats, Intake
from drivers.writebatch import WriteBatch
from drivers.jsonmap import BadDocument, JsonMapping, decode_document
from drivers.kit import Backoff, DeviceHealth, Problems
from drivers.websocket.config import WebSocketSettings
from core.waits import wait_set

log = logging.getLogger("gatewayd.drivers.websocket")

SLICE = 500  # messages decoded before the loop is given back to other tasks
GAP_REPORT_SPACING = 5.0  # seconds between two gap events of one device during a flood


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
        self._stats = InboundStats()
        self.health = DeviceHealth(name, settings.where, log, label=f"device {name} ({settings.where['url']})")
        self.problems = Problems(log, f"device {name}")
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        everyone = list(range(len(self.mappings)))
        self.inbox = Inbox(settings.queue_limit, lambda topic: everyone)
        self.intake = Intake(self.names, self._stats, self.problems)
        self._arrived = asyncio.Event()

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> Self:
        return cls(device.name, device.settings, device.timeout, [tag.address for tag in device.tags],
                   [tag.name for tag in device.tags], rows)

    @property
    def stats(self) -> InboundStats:
        self._stats.messages_dropped = self.inbox.dropped_total
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
            self.report_gap(sink)  # never silently, also when stopped in the middle of a flood

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
                        if self.inbox.put(Message("", payload, time.monotonic())):
                            self._arrived.set()
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
            self.intake.link_lost()
        self.health.down(sink, cause, Quality.COMM_FAILURE)

    # --- decoding ----------------------------------------------------------------------------------

    async def _decode_forever(self, sink: SampleSink) -> None:
        rate = self.settings.max_messages_per_second
        tokens, refilled = rate, time.monotonic()
        next_gap_report = refilled
        while True:
            now = time.monotonic()
            tokens, refilled = min(rate, tokens + (now - refilled) * rate), now
            if tokens >= 1 and len(self.inbox):
                messages = self.inbox.take(min(SLICE, int(tokens)))
                tokens -= len(messages)
                self.decode(sink, messages)
            if now >= next_gap_report and self.report_gap(sink):
                next_gap_report = now + GAP_REPORT_SPACING
            if len(self.inbox):
                await asyncio.sleep(0 if tokens >= 1 else (1 - tokens) / rate)
                continue
            self._arrived.clear()
            await wait_set(self._arrived, GAP_REPORT_SPACING)

    def decode(self, sink: SampleSink, messages: list[Message]) -> None:
        """Messages into the tags they are for, written in few sink calls."""
        batch = self.intake.batch = WriteBatch(sink, self.rows)
        for message in messages:
            self._decode_one(message)
        batch.flush()

    def _decode_one(self, message: Message) -> None:
        self._stats.polls += 1
        intake, read_at = self.intake, message.read_at
        try:
            document = decode_document(message.payload)
        except BadDocument as exc:
            for position in self.unmatched:
                intake.bad(position, Quality.DECODE_ERROR, read_at, f"frame: {exc}")
            if not self.unmatched:
                self._stats.decode_errors += 1
                self.problems.note("frame", f"a frame was no JSON document: {exc}")
            return
        for position, mapping in enumerate(self.mappings):
            if mapping.match and not mapping.selects(document):
                continue
            reading = mapping.read(document)
            if reading.problem is not None:
                intake.bad(position, Quality.DECODE_ERROR, read_at, reading.problem)
            else:
                intake.reading(position, reading.value, reading.quality, reading.source_ts, read_at)

    def report_gap(self, sink: SampleSink) -> bool:
        """The messages the full inbox dropped since the last report as a gap event; False when none."""
        drops = self.inbox.take_drops()
        if drops is None:
            return False
        event = gap_event(self.name, self.names, drops, self.settings.queue_limit,
                          self.settings.max_messages_per_second)
        log.warning("device %s: %s", self.name, event.message)
        sink.event(event)
        return True


def closed_cause(code: int | None, reason: str, sent_code: int | None = None, sent_reason: str = "") -> str:
    """Why a connection ended, as the close frames say (1011 "keepalive ping timeout": no pong in time)."""
    if code is None and sent_code is None:
        return "connection lost without a close frame"
    if code is None:
        return f"connection closed by the gateway: {sent_code} {sent_reason}".rstrip()
    return f"connection closed by the server: {code} {reason}".rstrip()
