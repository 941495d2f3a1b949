"""Runtime of the `tankbus` kind, on gatewayd's driver kit: one connection, one request per channel.

`BlockPoller` does what every polling driver must: each channel's value is written with the time its
answer arrived, a garbled answer makes that tag DECODE_ERROR, a gauge in fault SENSOR_FAULT, and a
concentrator that answers nothing is down (one event) until it answers again (one event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from drivers.kit import BadAnswer, Backoff, BlockPoller, DeviceHealth, DriverStats, NoAnswer, Problems, next_tick
from core.types import Quality, SampleSink

log = logging.getLogger("acme_tankbus")


@dataclass(frozen=True)
class ChannelRead:
    """One request of a poll: a channel, and the position its tag writes to."""

    channel: int
    rows: np.ndarray

    def describe(self) -> str:
        return f"channel {self.channel}"


def parse_answer(line: bytes, channel: int) -> float:
    """The value of `OK <channel> <value>`; BadAnswer for a fault or anything else."""
    words = line.decode("ascii", "replace").split()
    if len(words) == 3 and words[0] == "ERR" and words[1] == str(channel):
        quality = Quality.SENSOR_FAULT if words[2] == "fault" else Quality.DECODE_ERROR
        raise BadAnswer(f"concentrator says {words[2]}", quality)
    if len(words) != 3 or words[0] != "OK" or words[1] != str(channel):
        raise BadAnswer(f"not an answer to READ {channel}: {line[:40]!r}", Quality.DECODE_ERROR)
    try:
        return float(words[2])
    except ValueError:
        raise BadAnswer(f"value {words[2][:20]!r} is not a number", Quality.DECODE_ERROR) from None


class TankbusDriver:
    def __init__(self, device: Any, rows: np.ndarray) -> None:
        settings = device.settings
        self.host, self.port = settings.host, settings.port
        self.poll_interval, self.timeout = device.poll_interval, device.timeout
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.health = DeviceHealth(device.name, {"host": self.host, "port": self.port}, log)
        self._stats = DriverStats()
        reads = [ChannelRead(tag.address.channel, rows[[position]]) for position, tag in enumerate(device.tags)]
        self.poller = BlockPoller(reads, rows, self.health, self._stats, Problems(log, f"device {device.name}"))

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> Self:
        return cls(device, rows)

    @property
    def stats(self) -> DriverStats:
        return self._stats

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        connections = 0
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            except (OSError, TimeoutError) as exc:
                self._stats.failures += 1
                sink.set_quality(self.poller.rows, int(Quality.COMM_FAILURE))
                self.health.down(sink, f"cannot connect: {exc or type(exc).__name__}", Quality.COMM_FAILURE)
            else:
                self._stats.reconnects += connections > 0
                connections += 1
                try:
                    await self._poll_until_lost(reader, writer, sink)
                finally:
                    writer.close()
            await asyncio.sleep(self.backoff.next())

    async def _poll_until_lost(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               sink: SampleSink) -> None:
        """Poll on one connection until a request goes unanswered (then the stream cannot be trusted)."""
        lost = False

        async def fetch(read: ChannelRead) -> tuple[np.ndarray, float]:
            nonlocal lost
            try:
                writer.write(f"READ {read.channel}\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), self.timeout)
            except (OSError, TimeoutError) as exc:
                lost = True
                raise NoAnswer(str(exc) or type(exc).__name__) from None
            read_at = time.monotonic()
            if not line:
                lost = True
                raise NoAnswer("connection closed by the concentrator")
            return np.array([parse_answer(line, read.channel)]), read_at

        tick = time.monotonic()
        while not lost:
            if await self.poller.poll(sink, fetch):
                self.backoff.reset()
            tick, skipped = next_tick(tick, self.poll_interval, time.monotonic())
            self._stats.skipped_ticks += skipped
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
