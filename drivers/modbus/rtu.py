"""Modbus RTU serial bus: one task owns the port and schedules every slave on it. Read-only.

A serial line carries one request at a time, so one slow or dead slave could stall every other
slave on it. This driver keeps the cost of a bad slave to what the line cannot avoid:

- Scheduling: each slave has its own poll interval and a due time on a monotonic schedule; the
  task always serves the slave that is due first, and a slave that overran skips the ticks it
  missed rather than bursting. Before each request the line must have been quiet for the
  inter-frame silence (3.5 characters, 1.75 ms above 19200 baud, or `silence`).
- A request without an answer costs its slave's `timeout`, once: the slave's other blocks are not
  tried in that poll, the port stays open (a dead slave is never a reason to reopen the line), and
  the slave's rows become COMM_FAILURE with one `device_down` event (source `BUS.UNIT`).
- Backoff and circuit breaker: after a failed poll the slave is retried at its next regular tick,
  then at twice its interval; after `breaker_failures` failed polls in a row its circuit opens and
  it is only probed every `probe_interval`. The first answered probe closes the circuit, brings one
  `device_up` event and restores the slave's regular schedule.
- A Modbus exception reply fails only its block (DEVICE_ERROR; COMM_FAILURE for the gateway codes
  0x0A/0x0B), like Modbus TCP; a slave whose every block answers with an exception has failed its
  poll, so it is declared down and, after `breaker_failures` such polls, probed every
  `probe_interval`. Garbage (bad CRC, unexpected function, wrong byte count, a frame cut short)
  fails its block with DECODE_ERROR, and the line is drained until it is quiet again.
- A reply is complete only when the line has fallen silent after it (the frame silence, measured
  from the last byte that arrived). A frame followed by anything before that silence is a
  collision: two senders at once, e.g. a faulty slave answering with this slave's unit id just
  before its real reply. The block fails with DECODE_ERROR and the slave's `collisions` counts it.
- A complete, CRC-valid frame from another unit alone between two silences is a late answer of a
  slave that had timed out earlier: it is dropped and the wait goes on, so a slow slave cannot
  spoil the reply of the next one.
- Only when the port itself fails (cannot be opened, or the adapter is unplugged and reads fail)
  is the line closed: every row becomes COMM_FAILURE, one `device_down` event names the port, and
  reopening backs off from `backoff_initial` to `backoff_max`.

Why an RTU master of our own over pyserial, rather than pymodbus' serial client: the scheduling
above needs control of the line that the client does not give. A cancelled or timed-out pymodbus
request leaves its transaction and framer state behind and its recovery is to reconnect, i.e. to
reopen the port; the expected reply length, the drain after garbage and the dropping of late
frames must be decided per request here. The framing itself is small and pure
(`drivers.modbus.rtu_frame`, checked against pymodbus' own CRC in tests), block planning and
decoding are the Modbus TCP driver's (`plan`, `codec`), and pyserial only opens and configures the
port (baud, parity, stop bits, kernel RS-485 mode); reads and writes go through the event loop on
its non-blocking file descriptor, so no thread is involved. Not using pymodbus' `wait_for` path
here also means the Python 3.11 cancellation race that `tcp._raise_if_cancelled` guards against
cannot occur: every wait is an `asyncio.timeout` around an event or a sleep.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import operator
import os
import select
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import serial
import serial.rs485

from drivers.kit import Backoff, BlockPoller, DeviceHealth, DriverStats, NoAnswer, Problems, next_tick
from drivers.modbus.plan import Block
from drivers.modbus.reads import PlannedRead, decode_error, exception_error, planned_reads
from drivers.modbus.rtu_config import RtuAddress, SerialSettings
from drivers.modbus.rtu_frame import (
    MAX_FRAME, Collision, ExceptionReply, FrameError, frame_length, frame_of_window, read_request, reply_data,
)
from core.types import Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.modbus")

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
READ_SIZE = 4096


class LineError(Exception):
    """The port itself failed: it cannot be opened, configured, read or written."""


class NoReply(NoAnswer):
    """The slave did not answer within its timeout."""


class SerialLine:
    """An open port: frames out, bytes in through the event loop, and the time of the last activity.

    `last_activity` is when the line last carried a character, counting a frame we sent as on the
    wire until its last character has gone out at the configured baud rate.
    """

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.last_activity = -math.inf
        self._buffer = bytearray()
        self._wake = asyncio.Event()
        self._error: OSError | None = None
        self._serial = self._open(settings)
        self._fd = self._serial.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    @staticmethod
    def _open(settings: SerialSettings) -> serial.Serial:
        try:
            port = serial.Serial(settings.port, settings.baud, bytesize=settings.byte_size,
                                 parity=PARITY[settings.parity], stopbits=settings.stop_bits,
                                 timeout=0, write_timeout=0, exclusive=True)
        except (OSError, ValueError, termios.error, serial.SerialException) as exc:
            raise LineError(f"cannot open {settings.port}: {exc}") from exc
        if settings.rs485:
            try:
                port.rs485_mode = serial.rs485.RS485Settings(
                    rts_level_for_tx=True, rts_level_for_rx=False,
                    delay_before_tx=settings.rts_delay_before_tx, delay_before_rx=settings.rts_delay_after_tx)
            except (OSError, ValueError, termios.error, serial.SerialException) as exc:
                port.close()
                raise LineError(f"cannot enable RS-485 mode on {settings.port}: {exc}") from exc
        return port

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        self._serial.close()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            data, self._error = b"", exc
        if not data:
            self._error = self._error or OSError("end of file")
            asyncio.get_running_loop().remove_reader(self._fd)
        self._buffer += data
        self.last_activity = time.monotonic()
        self._wake.set()

    def _take_pending(self) -> None:
        """Read bytes that are already in the kernel but not yet handed to us by the event loop.

        Asked with select(), because a raw tty without VMIN reads 0 bytes, not EAGAIN, when empty.
        """
        if select.select([self._fd], [], [], 0)[0]:
            self._on_readable()

    def _check(self) -> None:
        if self._error is not None:
            raise LineError(f"{self.settings.port} failed: {self._error}")

    async def quiet(self, silence: float) -> None:
        """Wait until nothing has arrived or been sent for `silence`; whatever arrives meanwhile is dropped.

        A line that never falls quiet (a slave babbling, noise on an unterminated line) fails after
        the time of two longest frames plus a second.
        """
        give_up = time.monotonic() + 2 * MAX_FRAME * self.settings.char_time + 1.0
        while True:
            self._check()
            self._buffer.clear()
            now = time.monotonic()
            wait = self.last_activity + silence - now
            if wait <= 0:
                return
            if now > give_up:
                raise LineError(f"{self.settings.port} never fell quiet for {silence * 1000:.2f} ms")
            await asyncio.sleep(wait)

    def send(self, frame: bytes) -> None:
        self._check()
        self._buffer.clear()
        try:
            written = os.write(self._fd, frame)
        except OSError as exc:
            raise LineError(f"cannot write to {self.settings.port}: {exc}") from exc
        if written != len(frame):
            raise LineError(f"{self.settings.port} took {written} of {len(frame)} bytes")
        self.last_activity = time.monotonic() + len(frame) * self.settings.char_time

    async def receive(self, unit_id: int, timeout: float) -> bytes:
        """The next whole frame from `unit_id`, complete only once the line has fallen silent after it.

        Silence is measured as the time since the last byte arrived, never inferred from the length
        and the baud rate (pseudo-terminals and USB adapters deliver bytes in bursts whatever the
        baud). Everything the line carried up to that silence is one window (`frame_of_window`): a
        frame followed by anything is a Collision; a late frame of another unit alone in its window
        is dropped and the wait goes on. The reply must be complete within `timeout`; the silence
        after it may take up to one more frame silence.

        Raises NoReply when nothing came within `timeout`, FrameError (Collision included) for
        garbage, a frame that stopped short or two senders at once, LineError when the port failed.
        """
        silence = self.settings.frame_silence
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            now = time.monotonic()
            length = frame_length(self._buffer)
            if length is not None and len(self._buffer) >= length:
                quiet_at = self.last_activity + silence
                if now >= quiet_at:
                    self._take_pending()
                    if self.last_activity + silence > now:
                        continue
                if now >= quiet_at or now >= deadline + silence:
                    window = bytes(self._buffer)
                    self._buffer.clear()
                    frame = frame_of_window(window, unit_id)
                    if frame is None:
                        log.debug("%s: dropped a late frame of unit %d", self.settings.port, window[0])
                        continue
                    return frame
                await asyncio.sleep(min(quiet_at, deadline + silence) - now)
                continue
            remaining = deadline - now
            if remaining <= 0:
                if self._buffer:
                    raise FrameError(f"garbage: {len(self._buffer)} bytes, not a whole frame")
                raise NoReply(f"no response within {timeout:g} s")
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                pass


@dataclass(eq=False)
class Slave:
    """A slave's plan and its state on the bus: schedule, failures in a row, health, figures.

    `poller` (the kit's block poll, with the slave's own `DeviceHealth`) is attached by the bus.
    """

    unit_id: int
    name: str
    poll_interval: float
    timeout: float
    reads: tuple[PlannedRead, ...]
    rows: np.ndarray
    due: float = 0.0
    failed_in_row: int = 0  # failed polls in a row
    probes: int = 0  # polls made while the circuit was open
    stats: DriverStats = field(default_factory=lambda: DriverStats(collisions=0))
    poller: BlockPoller | None = None

    @property
    def is_down(self) -> bool:
        return self.poller is not None and self.poller.health.is_down


class ModbusRtuBusDriver:
    """Polls every slave of one serial line and writes what it reads into a SampleSink.

    The bus's `stats` sum the slaves' (each `Slave` keeps its own) and the line's: failures to open
    the port, and reopenings as reconnects; `collisions` counts replies lost to two senders in one window.
    """

    def __init__(self, name: str, settings: SerialSettings, slaves: Sequence[Slave], rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.slaves = tuple(slaves)
        self.rows = rows
        self.opens = 0
        self.line_stats = DriverStats()
        for slave in self.slaves:
            health = DeviceHealth(slave.name, {"port": settings.port, "unit_id": slave.unit_id}, log,
                                  label=f"bus {name}: unit {slave.unit_id}")
            slave.poller = BlockPoller(slave.reads, slave.rows, health, slave.stats,
                                       Problems(log, f"bus {name}: unit {slave.unit_id}"))
        self.line_health = DeviceHealth(name, {"port": settings.port}, log, label=f"bus {name} ({settings.port})")
        self._line: SerialLine | None = None
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> ModbusRtuBusDriver:
        """Group a validated bus DeviceConfig's tags by slave; tag i sits at point-table row rows[i]."""
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        settings: SerialSettings = device.settings
        by_unit: dict[int, list[int]] = {}
        for index, tag in enumerate(device.tags):
            address: RtuAddress = tag.address
            by_unit.setdefault(address.slave.unit_id, []).append(index)
        slaves = []
        for unit_id, indexes in sorted(by_unit.items()):
            spec = device.tags[indexes[0]].address.slave
            addresses = [device.tags[index].address.register for index in indexes]
            reads = tuple(planned_reads(addresses, rows[indexes], settings.max_gap, settings.max_block))
            slaves.append(Slave(unit_id, f"{device.name}.{unit_id}", spec.poll_interval or device.poll_interval,
                                spec.timeout or device.timeout, reads, rows[indexes]))
        return cls(device.name, settings, slaves, rows)

    @property
    def stats(self) -> DriverStats:
        return functools.reduce(operator.add, (slave.stats for slave in self.slaves), self.line_stats)

    @property
    def is_down(self) -> bool:
        return self.line_health.is_down or all(slave.is_down for slave in self.slaves)

    def circuit_open(self, slave: Slave) -> bool:
        return slave.failed_in_row >= self.settings.breaker_failures

    async def run(self, sink: SampleSink) -> None:
        """Serve the slaves until cancelled."""
        now = time.monotonic()
        for slave in self.slaves:
            slave.due = now
        try:
            while True:
                if self._line is None and not self._open(sink):
                    await asyncio.sleep(self._backoff.next())
                    continue
                slave = min(self.slaves, key=lambda candidate: candidate.due)
                await asyncio.sleep(max(0.0, slave.due - time.monotonic()))
                try:
                    answered = await self._poll(slave, sink)
                except LineError as exc:
                    self._close()
                    self._line_failed(sink, str(exc))
                    continue
                self._schedule(slave, answered)
        finally:
            self._close()

    def _open(self, sink: SampleSink) -> bool:
        try:
            self._line = SerialLine(self.settings)
        except LineError as exc:
            self.line_stats.failures += 1
            self._line_failed(sink, str(exc))
            return False
        self.opens += 1
        self.line_stats.reconnects = self.opens - 1
        self._backoff.reset()
        self.line_health.up(sink)
        return True

    def _close(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

    def _line_failed(self, sink: SampleSink, cause: str) -> None:
        sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
        self.line_health.down(sink, cause, Quality.COMM_FAILURE)

    async def _poll(self, slave: Slave, sink: SampleSink) -> bool:
        """Read every block of one slave; True when it answered at least one of them."""
        if self.circuit_open(slave):
            slave.probes += 1

        async def fetch(read: PlannedRead) -> tuple[np.ndarray, float]:
            answer = await self._request(slave, read.block)
            return read.decode(answer), time.monotonic()

        answered = await slave.poller.poll(sink, fetch)
        self.line_stats.last_poll_latency = slave.stats.last_poll_latency
        return answered

    async def _request(self, slave: Slave, block: Block) -> bytes:
        """One transaction: silence, request, the data of the slave's reply; garbage is drained before
        returning."""
        line = self._line
        await line.quiet(self.settings.frame_silence)
        line.send(read_request(slave.unit_id, block.table, block.start, block.count))
        try:
            frame = await line.receive(slave.unit_id, slave.timeout)
            return reply_data(frame, slave.unit_id, block.table, block.count)
        except ExceptionReply as exc:
            raise exception_error(exc.code) from None
        except FrameError as exc:
            if isinstance(exc, Collision):
                slave.stats.collisions += 1
            await line.quiet(self.settings.frame_silence)
            raise decode_error(str(exc)) from None

    def _schedule(self, slave: Slave, answered: bool) -> None:
        now = time.monotonic()
        if answered:
            slave.failed_in_row = 0
            slave.due, skipped = next_tick(slave.due, slave.poll_interval, now)
            slave.stats.skipped_ticks += skipped
            return
        slave.failed_in_row += 1
        if self.circuit_open(slave):
            if slave.failed_in_row == self.settings.breaker_failures:
                log.warning("bus %s: unit %d failed %d polls in a row; probing it every %g s",
                            self.name, slave.unit_id, slave.failed_in_row, self.settings.probe_interval)
            slave.due = now + self.settings.probe_interval
        else:
            slave.due = now + min(self.settings.probe_interval,
                                  slave.poll_interval * 2 ** (slave.failed_in_row - 1))
