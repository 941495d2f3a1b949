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
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.modbus.codec import BlockDecoder, ResponseLengthError, quality
from drivers.modbus.config import BIT_TABLES, ModbusTcpSettings
from drivers.modbus.plan import Block, plan_blocks
from gatewayd.types import Event, Priority, Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.modbus")

READ_FUNCTIONS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}
FUNCTION_CODES = {"holding": 3, "input": 4, "coil": 1, "discrete": 2}
GATEWAY_UNREACHABLE = {0x0A: "gateway path unavailable", 0x0B: "gateway target device failed to respond"}
EXCEPTION_NAMES = {
    0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value",
    0x04: "server device failure", 0x05: "acknowledge", 0x06: "server device busy",
    0x08: "memory parity error", **GATEWAY_UNREACHABLE,
}
JITTER = 0.2  # each reconnect delay is shortened by up to this fraction, so gateways do not reconnect in step


class CommError(Exception):
    """The device could not be reached: no connection, connection lost, or no answer in time."""


class BlockError(Exception):
    """The device answered a block read but not with usable data; only that block's rows are bad."""

    def __init__(self, message: str, quality_code: Quality) -> None:
        super().__init__(message)
        self.quality = quality_code


class MalformedResponse(Exception):
    """A frame arrived that pymodbus could not decode (a byte count that disagrees with the frame, an
    unknown function code): the device answered, but with nothing usable."""


class Backoff:
    """Exponential reconnect delays: initial, doubled per failure up to maximum, minus random jitter."""

    def __init__(self, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self._rand = initial, maximum, rand
        self._nominal = initial

    def next(self) -> float:
        delay = self._nominal * (1.0 - JITTER * self._rand())
        self._nominal = min(self.maximum, self._nominal * 2.0)
        return delay

    def reset(self) -> None:
        self._nominal = self.initial


@dataclass(frozen=True)
class PlannedRead:
    """A block with its decoder and the point-table rows its values go to, in the decoder's order."""

    block: Block
    decoder: BlockDecoder
    rows: np.ndarray


def next_tick(previous: float, interval: float, now: float) -> tuple[float, int]:
    """The first tick of the schedule after `now`, and how many ticks were skipped to get there."""
    due = previous + interval
    if due > now:
        return due, 0
    skipped = math.floor((now - previous) / interval)
    return previous + (skipped + 1) * interval, skipped


class ModbusTcpDriver:
    """Polls one Modbus TCP device and writes what it reads into a SampleSink.

    Counters for metrics and benchmarks: `polls` (polls in which the device answered), `failures`
    (failed polls and connection attempts), `reconnects` (connections after the first),
    `block_errors` (blocks that failed while others were read), `skipped_ticks` (schedule ticks lost
    to overrunning polls), `last_poll_latency` (seconds, of the last answered poll) and
    `requests_per_poll`.

    Subclasses for the other transports over IP (Modbus UDP, RTU framing over TCP) change only
    `client_class` and `framer`: the polling, timeouts and outage handling are this class's.
    """

    client_class: type = AsyncModbusTcpClient
    framer = FramerType.SOCKET

    def __init__(self, name: str, settings: ModbusTcpSettings, poll_interval: float, timeout: float,
                 reads: Sequence[PlannedRead], rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.poll_interval, self.timeout = poll_interval, timeout
        self.reads = tuple(reads)
        self.rows = rows
        self.polls = self.failures = self.reconnects = self.block_errors = self.skipped_ticks = 0
        self.last_poll_latency = math.nan
        self.requests_per_poll = len(self.reads)
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._client: AsyncModbusTcpClient | None = None
        self._connected_before = False
        self._down_since: float | None = None
        self._failing_blocks: set[Block] = set()

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> ModbusTcpDriver:
        """Plan and compile the reads of a validated DeviceConfig whose tag i sits at point-table row rows[i]."""
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        addresses = [tag.address for tag in device.tags]
        settings = device.settings
        reads = [PlannedRead(block, BlockDecoder(block, addresses), rows[[index for index, _ in block.members]])
                 for block in plan_blocks(addresses, settings.max_gap, settings.max_block)]
        return cls(device.name, settings, device.poll_interval, device.timeout, reads, rows)

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled."""
        try:
            tick = time.monotonic()
            while True:
                if await self._poll(sink):
                    self._backoff.reset()
                    tick, skipped = next_tick(tick, self.poll_interval, time.monotonic())
                    self.skipped_ticks += skipped
                else:
                    tick = time.monotonic() + self._backoff.next()
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
        finally:
            self._disconnect()

    async def _poll(self, sink: SampleSink) -> bool:
        """Read every block once; True when the device answered at least one of them."""
        started = time.monotonic()
        good: list[tuple[PlannedRead, np.ndarray]] = []
        bad: list[tuple[PlannedRead, BlockError]] = []
        try:
            for read in self.reads:
                try:
                    good.append((read, read.decoder.decode(await self._request(read.block))))
                except BlockError as exc:
                    bad.append((read, exc))
                except ResponseLengthError as exc:
                    bad.append((read, BlockError(f"malformed response: {exc}", Quality.DECODE_ERROR)))
        except CommError as exc:
            self._device_down(sink, str(exc), Quality.COMM_FAILURE)
            return False
        for read, error in bad:
            sink.set_quality(read.rows, int(error.quality))
        if not good:
            self._device_down(sink, str(bad[0][1]), bad[0][1].quality)
            return False
        rows = np.concatenate([read.rows for read, _ in good])
        values = np.concatenate([values for _, values in good])
        sink.write(rows, values, quality(values))
        self._note_blocks(good, bad)
        self._device_up(sink)
        self.polls += 1
        self.last_poll_latency = time.monotonic() - started
        return True

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
                raise BlockError(f"{describe(block)}: malformed response ({exc})", Quality.DECODE_ERROR) from None
            except (OSError, ModbusException) as exc:
                cause = f"connection lost ({exc})"
            else:
                if response.function_code & 0x7F != FUNCTION_CODES[block.table]:
                    raise BlockError(f"{describe(block)}: answer with function code {response.function_code:#04x} "
                                     f"to a request with {FUNCTION_CODES[block.table]:#04x}", Quality.DECODE_ERROR)
                if response.isError():
                    raise exception_error(block, response.exception_code)
                return response.bits if block.table in BIT_TABLES else response.registers
            self._disconnect()
        raise CommError(f"{describe(block)}: {cause}")

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
        self.reconnects += self._connected_before
        self._connected_before = True
        return client

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _device_down(self, sink: SampleSink, cause: str, quality_code: Quality) -> None:
        self.failures += 1
        if quality_code == Quality.COMM_FAILURE:
            sink.set_quality(self.rows, int(quality_code))
        if self._down_since is not None:
            log.debug("device %s still down: %s", self.name, cause)
            return
        self._down_since = time.monotonic()
        log.warning("device %s (%s:%d) down: %s", self.name, self.settings.host, self.settings.port, cause)
        sink.event(Event(
            kind="device_down", ts=time.time(), source=self.name, priority=Priority.HIGH,
            message=f"{self.name} down: {cause}",
            data={"host": self.settings.host, "port": self.settings.port, "unit_id": self.settings.unit_id,
                  "cause": cause, "quality": int(quality_code)},
        ))

    def _device_up(self, sink: SampleSink) -> None:
        if self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        log.info("device %s back after %.1f s", self.name, down_for)
        sink.event(Event(
            kind="device_up", ts=time.time(), source=self.name, priority=Priority.INFO,
            message=f"{self.name} answering again after {down_for:.1f} s",
            data={"host": self.settings.host, "port": self.settings.port, "down_for": round(down_for, 3)},
        ))

    def _note_blocks(self, good: list[tuple[PlannedRead, np.ndarray]],
                     bad: list[tuple[PlannedRead, BlockError]]) -> None:
        """Log a block's first failure and its recovery; count failures of single blocks."""
        self.block_errors += len(bad)
        for read, error in bad:
            level = logging.DEBUG if read.block in self._failing_blocks else logging.WARNING
            log.log(level, "device %s: %s", self.name, error)
            self._failing_blocks.add(read.block)
        for read, _ in good:
            if read.block in self._failing_blocks:
                self._failing_blocks.discard(read.block)
                log.info("device %s: %s readable again", self.name, describe(read.block))


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


def describe(block: Block) -> str:
    return f"{block.table} {block.start}..{block.end - 1}"


def exception_error(block: Block, code: int) -> BlockError:
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    quality_code = Quality.COMM_FAILURE if code in GATEWAY_UNREACHABLE else Quality.DEVICE_ERROR
    return BlockError(f"{describe(block)}: exception {code:#04x} ({name})", quality_code)
