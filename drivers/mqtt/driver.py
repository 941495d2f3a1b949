"""The `mqtt` device kind at run time: subscribe, decode within bounds, keep every tag's state honest.

One `Link` (paho, its own thread) receives; the event loop decodes. Messages wait in a bounded
`Inbox` and are decoded at most `max_messages_per_second` (a token bucket allowing one second of
burst), in slices that give the loop back to the other devices; what the full inbox drops becomes a
`gap` event upstream, at most one per GAP_REPORT_SPACING, listing per tag how many readings were
lost and when they arrived. The profile (`json_profile`, `sparkplug_host`) turns each message into
readings through the `Intake`.

Up and down are the connection's: up once the broker granted the subscriptions (`device_up`),
down when it cannot be reached, refuses us or the connection drops (`device_down`, every tag
COMM_FAILURE, kept until a reading comes). A tag whose sensor says nothing turns STALE after its
`stale_after` (the point table does that) and COMM_FAILURE after `comm_failure_after`, checked here
every SILENCE_CHECK seconds; after a reconnect, each tag gets a full `comm_failure_after` again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.kit import DeviceHealth, Problems
from drivers.mqtt.config import MqttSettings, subscriptions
from drivers.inbox import Drops, Inbox, gap_event
from drivers.intake import InboundStats, Intake
from drivers.mqtt.json_profile import JsonProfile
from drivers.mqtt.link import Link
from drivers.mqtt.sparkplug_host import SparkplugProfile
from drivers.writebatch import WriteBatch
from core.types import Quality, SampleSink
from core.waits import wait_set

log = logging.getLogger("gatewayd.drivers.mqtt")

SLICE = 500  # messages decoded before the loop is given back to other tasks
SILENCE_CHECK = 0.5  # seconds between two checks for silent tags
GAP_REPORT_SPACING = 5.0  # seconds between two gap events of one device during a flood


@dataclass
class MqttStats(InboundStats):
    """The figures of a subscriber (drivers.intake.InboundStats) and of its Sparkplug B hosting."""

    sparkplug_seq_gaps: int = 0  # a node's message sequence broke: its tags STALE until its next birth
    sparkplug_ignored: int = 0  # messages of a node or device without a valid birth since its death or gap


class MqttDriver:
    """Subscribes one broker's topics into a SampleSink. Figures in `stats` (`MqttStats`)."""

    def __init__(self, name: str, settings: MqttSettings, addresses: list[Any], names: list[str],
                 rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.rows = np.asarray(rows, dtype=np.intp)
        self.names = list(names)
        self.filters = subscriptions(settings, addresses)
        self.stats = MqttStats()
        self.health = DeviceHealth(name, {"host": settings.host, "port": settings.port}, log,
                                   label=f"device {name} (broker {settings.host}:{settings.port})")
        self.problems = Problems(log, f"device {name}")
        self.intake = Intake(names, self.stats, self.problems)
        if settings.payload == "sparkplug_b":
            self.profile: JsonProfile | SparkplugProfile = SparkplugProfile(settings.group, addresses, self.intake)
        else:
            self.profile = JsonProfile(addresses, self.intake, settings.max_payload)
        self.inbox = Inbox(settings.queue_limit, self.profile.positions)
        self._wake = asyncio.Event()
        self._sink: SampleSink | None = None
        self.connections = 0  # connections whose subscriptions the broker granted

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> MqttDriver:
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        return cls(device.name, device.settings, [tag.address for tag in device.tags],
                   [tag.name for tag in device.tags], rows)

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        self._sink = sink
        link = Link(self.name, self.settings, self.filters, self.inbox, self, asyncio.get_running_loop())
        link.start()
        try:
            await self._serve(sink)
        finally:
            drops = self.inbox.take_drops()
            if drops is not None:  # never silently, also when stopped in the middle of a flood
                self._report_gap(sink, drops)
            await asyncio.to_thread(link.stop)

    async def _serve(self, sink: SampleSink) -> None:
        rate = self.settings.max_messages_per_second
        tokens, refilled = rate, time.monotonic()
        next_silence_check = next_gap_report = refilled
        while True:
            now = time.monotonic()
            tokens, refilled = min(rate, tokens + (now - refilled) * rate), now
            if tokens >= 1 and len(self.inbox):
                tokens -= self._decode(sink, min(SLICE, int(tokens)))
            if now >= next_silence_check:
                self._check_silence(sink, now)
                next_silence_check = now + SILENCE_CHECK
            if now >= next_gap_report:
                drops = self.inbox.take_drops()
                if drops is not None:
                    self._report_gap(sink, drops)
                    next_gap_report = now + GAP_REPORT_SPACING
            self.stats.messages_dropped = self.inbox.dropped_total
            if len(self.inbox):
                await asyncio.sleep(0 if tokens >= 1 else (1 - tokens) / rate)
                continue
            self._wake.clear()
            await wait_set(self._wake, SILENCE_CHECK)

    def _decode(self, sink: SampleSink, budget: int) -> int:
        messages = self.inbox.take(budget)
        batch = self.intake.batch = WriteBatch(sink, self.rows)
        for message in messages:
            if self.profile.handle(message):
                self.stats.polls += 1
        batch.flush()
        return len(messages)

    def _check_silence(self, sink: SampleSink, now: float) -> None:
        if self.health.is_down or not self.connections:
            return
        quiet = self.intake.silence(now, self.settings.comm_failure_after)
        if quiet.size:
            sink.set_quality(self.rows[quiet], int(Quality.COMM_FAILURE))
            shown = ", ".join(self.names[position] for position in quiet[:5])
            more = f" and {quiet.size - 5} more" if quiet.size > 5 else ""
            self.problems.note("silent", f"{quiet.size} tags heard nothing for "
                               f"{self.settings.comm_failure_after:g} s: {shown}{more}")

    def _report_gap(self, sink: SampleSink, drops: Drops) -> None:
        event = gap_event(self.name, self.names, drops, self.settings.queue_limit,
                          self.settings.max_messages_per_second)
        log.warning("device %s: %s", self.name, event.message)
        sink.event(event)

    # LinkListener: called on the event loop thread
    def subscribed(self, granted: list[str], refused: list[tuple[str, str]]) -> None:
        for topic, reason in refused:
            self.problems.note(("refused", topic), f"broker refused the subscription {topic}: {reason}")
        if not granted:
            self.link_down(f"broker refused every subscription ({refused[0][1]})")
            return
        self.stats.reconnects += self.connections > 0
        self.connections += 1
        self.intake.heard[:] = time.monotonic()  # every tag gets a full comm_failure_after from now
        log.info("device %s: subscribed to %s", self.name, ", ".join(granted))
        self.health.up(self._sink)

    def link_down(self, cause: str) -> None:
        self.stats.failures += 1
        if not self.health.is_down:
            self._sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
            self.intake.link_lost()
        self.health.down(self._sink, cause, Quality.COMM_FAILURE)

    def woken(self) -> None:
        self._wake.set()
