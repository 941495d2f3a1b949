"""Modbus over IP: one task per device polls its planned blocks on a fixed schedule. Read-only.

The driver owns its link (`drivers.modbus.link`, a read-only client of our own) and makes every
retry, timeout and reconnect decision here, where the device's settings are:

- requests go one at a time (many devices and gateways mishandle pipelined requests), each bounded
  by `device.timeout` and retried `settings.retries` times at once on a fresh connection when
  nothing came back;
- no answer (no connection, connection lost, nothing within the timeout): the connection is closed
  (a late answer must never be taken for the next request's) and, once the retries are spent, the
  poll fails: every row COMM_FAILURE, one `device_down` event, reconnects back off exponentially
  from `backoff_initial` to `backoff_max` with jitter;
- an answer that is not a valid answer to its request (wrong length, function code, unit id,
  transaction id or protocol id, bad CRC, bytes that are no frame): its block is DECODE_ERROR the
  moment it arrives, the connection is dropped at once and the next block goes out on a new one
  (no backoff, no waiting for the timeout); `stats.decode_errors` counts them. A device whose every
  block was garbage is down with the cause "undecodable answers";
- a Modbus exception response fails only its block: DEVICE_ERROR (COMM_FAILURE for the gateway
  codes 0x0A/0x0B, which mean the device behind a gateway is unreachable); the other blocks keep
  their good values;
- the first poll that reads a block again ends the outage with one `device_up` event.

Polls follow a monotonic schedule at `device.poll_interval`; a poll that overruns skips the ticks it
missed instead of bursting to catch up. The poll itself, the events and the log policy are the
kit's (`drivers.kit.BlockPoller`), shared with the RTU bus master.

The subclasses in `transports` change only the link and its framing: Modbus UDP, RTU over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.kit import Backoff, BlockPoller, DeviceHealth, DriverStats, Problems, next_tick
from drivers.modbus.config import ModbusTcpSettings
from drivers.modbus.link import Framing, Link, MbapFraming
from drivers.modbus.reads import BlockError, CommError, PlannedRead, planned_reads
from core.types import Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.modbus")


class ModbusTcpDriver:
    """Polls one Modbus TCP device and writes what it reads into a SampleSink.

    Its `stats` (`drivers.kit.DriverStats`) count answered and failed polls, reconnects (connections
    after the first), block and decode errors, skipped ticks and the last poll's latency.
    """

    link_class: type[Link] = Link
    framing_class: type = MbapFraming

    def __init__(self, name: str, settings: ModbusTcpSettings, poll_interval: float, timeout: float,
                 reads: Sequence[PlannedRead], rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.poll_interval, self.timeout = poll_interval, timeout
        self.rows = rows
        self.stats = DriverStats()
        self.health = DeviceHealth(name, {"host": settings.host, "port": settings.port, "unit_id": settings.unit_id},
                                   log, label=f"device {name} ({settings.host}:{settings.port})")
        self.poller = BlockPoller(reads, rows, self.health, self.stats, Problems(log, f"device {name}"))
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._framing: Framing = self.framing_class(settings.unit_id)
        self._link: Link | None = None
        self._connected_before = False

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> ModbusTcpDriver:
        """Plan and compile the reads of a validated DeviceConfig whose tag i sits at position rows[i]."""
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        settings = device.settings
        reads = planned_reads([tag.address for tag in device.tags], rows, settings.max_gap, settings.max_block)
        return cls(device.name, settings, device.poll_interval, device.timeout, reads, rows)

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled."""
        try:
            tick = time.monotonic()
            while True:
                if await self.poller.poll(sink, self._fetch):
                    self._backoff.reset()
                    tick, skipped = next_tick(tick, self.poll_interval, time.monotonic())
                    self.stats.skipped_ticks += skipped
                else:
                    tick = time.monotonic() + self._backoff.next()
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
        finally:
            self._disconnect()

    async def _fetch(self, read: PlannedRead) -> tuple[np.ndarray, float]:
        """One block read and the time its answer arrived, retried at once on a fresh connection when
        nothing came back."""
        block = read.block
        cause = ""
        for _ in range(self.settings.retries + 1):
            try:
                link = self._link
                if link is None or not link.is_open or link.out_of_step:
                    link = await self._connect()
                answer = await link.read_data(block.table, block.start, block.count, self.timeout)
            except CommError as exc:
                cause = str(exc)
                self._disconnect()
            except BlockError as exc:
                if exc.quality == Quality.DECODE_ERROR:
                    self._disconnect()  # the stream is out of step: the next request goes out on a new one
                raise
            else:
                return read.decode(answer), link.answered_at
        raise CommError(cause)

    async def _connect(self) -> Link:
        """A new link, for when there is none, it was lost, or bytes came that nobody asked for."""
        self._disconnect()
        link = self.link_class(self._framing, self.settings.host, self.settings.port)
        await link.open(self.timeout)
        self._link = link
        self.stats.reconnects += self._connected_before
        self._connected_before = True
        return link

    def _disconnect(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
