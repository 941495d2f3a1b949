"""Modbus TCP driver: one task per device polls its planned blocks on a fixed schedule. Read-only.

The driver owns its connection. pymodbus is used with retries=0 and its own reconnect disabled, so
that every retry, timeout and reconnect decision is made here, where the device's settings are:

- requests go one at a time (many devices and gateways, and the pymodbus server, mishandle pipelined
  requests), each bounded by `device.timeout` and retried `settings.retries` times at once;
- a timeout or lost connection closes the connection (a late answer must never be taken for the
  next request's) and, once the retries are spent, the poll fails: all the device's rows become
  COMM_FAILURE, one `device_down` event starts the outage, and reconnects back off exponentially
  from `backoff_initial` to `backoff_max` with jitter;
- a Modbus exception response fails only its block: those rows become DEVICE_ERROR (COMM_FAILURE
  for the gateway codes 0x0A/0x0B, which mean the device behind a gateway is unreachable), the other
  blocks keep their good values. A response of the wrong length marks its block DECODE_ERROR. A poll
  in which no block could be read counts as an outage, too;
- the first poll that reads a block again ends the outage with one `device_up` event.

Polls follow a monotonic schedule at `device.poll_interval`; a poll that overruns skips the ticks it
missed instead of bursting to catch up. Only the first failure of an outage (or of a block) is logged
as a warning; repeats go to debug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.kit import Backoff, BlockPoller, DeviceHealth, DriverStats, Problems, next_tick
from drivers.modbus.config import BIT_TABLES, ModbusTcpSettings
from drivers.modbus.plan import Block
from drivers.modbus.reads import (
    FUNCTION_CODES, CommError, PlannedRead, decode_error, exception_error, planned_reads,
)
from gatewayd.types import SampleSink

log = logging.getLogger("gatewayd.drivers.modbus")

READ_FUNCTIONS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class MalformedResponse(Exception):
    """A frame arrived that pymodbus could not decode (a byte count that disagrees with the frame, an
    unknown function code): the device answered, but with nothing usable."""


class ModbusTcpDriver:
    """Polls one Modbus TCP device and writes what it reads into a SampleSink.

    Its `stats` (`drivers.kit.DriverStats`) count answered and failed polls, reconnects (connections
    after the first), block and decode errors, skipped ticks and the last poll's latency.

    Subclasses for the other transports over IP (Modbus UDP, RTU framing over TCP) change only
    `client_class` and `framer`: the polling, timeouts and outage handling are this class's.
    """

    client_class: type = AsyncModbusTcpClient
    framer = FramerType.SOCKET

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
        self._client: AsyncModbusTcpClient | None = None
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

    async def _fetch(self, read: PlannedRead) -> np.ndarray:
        return read.decode(await self._request(read.block))

    async def _request(self, block: Block) -> Sequence[int] | Sequence[bool]:
        """One block read, retried at once on a fresh connection after a timeout or connection loss."""
        cause = ""
        for _ in range(self.settings.retries + 1):
            try:
                client = await self._connection()
                read = getattr(client, READ_FUNCTIONS[block.table])
                async with asyncio.timeout(self.timeout):
                    response = await read(block.start, count=block.count, device_id=self.settings.unit_id)
                _raise_if_cancelled()
            except CommError as exc:
                cause = str(exc)
            except TimeoutError:
                cause = f"no response within {self.timeout:g} s"
            except MalformedResponse as exc:
                self._disconnect()  # the stream may be out of step: start the next request afresh
                raise decode_error(f"malformed response ({exc})") from None
            except (OSError, ModbusException) as exc:
                cause = f"connection lost ({exc})"
            else:
                if response.function_code & 0x7F != FUNCTION_CODES[block.table]:
                    raise decode_error(f"answer with function code {response.function_code:#04x} "
                                       f"to a request with {FUNCTION_CODES[block.table]:#04x}")
                if response.isError():
                    raise exception_error(response.exception_code)
                return response.bits if block.table in BIT_TABLES else response.registers
            self._disconnect()
        raise CommError(cause)

    async def _connection(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._disconnect()
        host, port = self.settings.host, self.settings.port
        # pymodbus' own timeout is a backstop only; asyncio.timeout below decides
        client = self.client_class(host, port=port, framer=self.framer, name=self.name,
                                   timeout=2 * self.timeout + 1.0, retries=0, reconnect_delay=0)
        _guard_frames(client)
        try:
            async with asyncio.timeout(self.timeout):
                connected = await client.connect()
            _raise_if_cancelled()
        except TimeoutError:
            connected = False
        except asyncio.CancelledError:
            client.close()
            raise
        if not connected:
            client.close()
            raise CommError(f"cannot connect to {host}:{port}")
        self._client = client
        self.stats.reconnects += self._connected_before
        self._connected_before = True
        return client

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _raise_if_cancelled() -> None:
    """Honour a cancellation that pymodbus swallowed.

    pymodbus awaits every request and connect through asyncio.wait_for, which in Python 3.11 returns
    the result instead of raising when the cancellation arrives together with the answer. The task
    still counts the request (`cancelling()`); without this check shutdown would wait on the driver
    for ever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _guard_frames(client: Any) -> None:
    """Turn a frame pymodbus cannot decode into a failed request instead of a traceback and a stall.

    pymodbus (3.16) raises ModbusIOException out of its protocol callback when a frame's PDU does not
    decode; asyncio then logs a traceback, drops the connection, and the request waits for its
    timeout. Wrapped here, the bad bytes are dropped and the waiting request fails at once with
    MalformedResponse (the exception is marked retrieved, as no request may be waiting).
    """
    manager = client.ctx
    receive = manager.callback_data

    def callback_data(data: bytes, addr: tuple | None = None) -> int:
        try:
            return receive(data, addr=addr)
        except ModbusException as exc:
            future = manager.response_future
            if not future.done():
                future.set_exception(MalformedResponse(str(exc)))
                future.exception()
            return len(data)

    manager.callback_data = callback_data

