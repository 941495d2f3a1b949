"""Gas-detection panel driver: the Modbus drivers read the profile's registers, this turns them into gas tags.

The registers are polled by an unchanged Modbus driver — `ModbusTcpDriver` for transport tcp, a
one-slave `ModbusRtuBusDriver` for rtu — with its timeouts, backoff and `device_down`/`device_up`
events. It writes into a `RegisterSink`, a private array of the profile's fields, and every write
there is interpreted at once (`panel.read_channel`) and written to the point table:

- `NAME` the concentration, with the channel's quality (SENSOR_FAULT in fault, MAINTENANCE in
  inhibit, calibration or bump test);
- `NAME.alarm` the panel's alarm level 0-3, `NAME.fault` its fault code (0 none);
- `NAME.threshold1` (2, 3) the detector's alarm thresholds, where the profile reads them.

Where the profile reads the detector's concentration unit, a unit other than the channel's
configured one (or a code naming none) makes the channel DEVICE_ERROR, with one
`gds_unit_mismatch` event naming panel, channel, configured and reported unit, and
`gds_unit_mismatch_cleared` once they agree again.

Events, one per change and never alarms: `gds_maintenance` / `gds_maintenance_end` (a channel
enters or leaves inhibit, calibration or bump test), `gds_fault` / `gds_fault_cleared` (with the
fault code). A heartbeat that has not changed for `heartbeat_timeout` means the panel's
processor stopped while its communication card still answers: every tag of the panel becomes
DEVICE_ERROR (the link is fine, the device is not), with one `gds_heartbeat_frozen` event, and
`gds_heartbeat_resumed` when it moves again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import numpy as np

from drivers.gds.config import GdsPoint, GdsSettings, threshold_role
from drivers.gds.panel import ChannelReading, read_channel, unit_mismatch
from drivers.kit import DriverStats
from drivers.modbus.config import ModbusTcpSettings
from drivers.modbus.reads import planned_reads
from drivers.modbus.rtu import ModbusRtuBusDriver, Slave
from drivers.modbus.tcp import ModbusTcpDriver
from core.types import Event, Priority, Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.gds")


class RegisterSink:
    """The inner Modbus driver's sink: the profile's fields of every configured channel, then interpreted.

    A poll arrives as one write per block; the panel is interpreted once the poll is over (the
    writes of one poll come in one go, so one `call_soon` sees them all), never from half a poll.
    `read_at` keeps each register's read time: a channel's tags carry the oldest of its fields'.
    """

    def __init__(self, size: int, panel: GdsDriver, sink: SampleSink) -> None:
        self.values = np.full(size, np.nan)
        self.quality = np.full(size, int(Quality.NO_VALUE), dtype=np.uint8)
        self.read_at = np.full(size, time.monotonic())
        self.panel, self.sink = panel, sink
        self._scheduled = False

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None, read_at=None) -> None:
        self.values[rows] = values
        self.quality[rows] = quality
        self.read_at[rows] = time.monotonic() if read_at is None else read_at
        self._publish_soon()

    def set_quality(self, rows, quality, read_at=None) -> None:
        self.quality[rows] = quality
        self.read_at[rows] = time.monotonic() if read_at is None else read_at
        self._publish_soon()

    def event(self, event: Event) -> None:
        self.sink.event(event)

    def _publish_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        self._scheduled = False
        self.panel.publish(self, self.sink)


class GdsDriver:
    """One panel: its inner Modbus driver, the register index of each channel field, the rows of its tags."""

    def __init__(self, name: str, settings: GdsSettings, inner: Any, fields: dict[int, dict[str, int]],
                 heartbeat: int | None, tag_rows: dict[int, dict[str, int]], tag_names: dict[int, str],
                 units: dict[int, str]) -> None:
        self.name, self.settings, self.inner = name, settings, inner
        self.fields, self.heartbeat, self.tag_rows, self.tag_names = fields, heartbeat, tag_rows, tag_names
        self.units = units  # channel -> its configured unit
        self.rows = np.array(sorted(row for rows in tag_rows.values() for row in rows.values()), dtype=np.intp)
        self.register_count = sum(len(indexes) for indexes in fields.values()) + (heartbeat is not None)
        self.heartbeat_frozen = False
        self._heartbeat_value: float | None = None
        self._heartbeat_changed = 0.0
        self._last: dict[int, ChannelReading] = {}

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> GdsDriver:
        settings: GdsSettings = device.settings
        profile = settings.profile
        rows = np.asarray(rows, dtype=np.intp)
        tag_rows: dict[int, dict[str, int]] = {}
        tag_names: dict[int, str] = {}
        units: dict[int, str] = {}
        for index, tag in enumerate(device.tags):
            point: GdsPoint = tag.address
            tag_rows.setdefault(point.channel, {})[point.role] = int(rows[index])
            if point.role == "concentration":
                tag_names[point.channel], units[point.channel] = tag.name, tag.unit
        addresses, fields = [], {}
        for channel in sorted(tag_rows):
            fields[channel] = {}
            for name in profile.fields:
                fields[channel][name] = len(addresses)
                addresses.append(profile.address(channel, name))
        heartbeat = None
        if profile.heartbeat is not None:
            heartbeat = len(addresses)
            addresses.append(profile.heartbeat)
        registers = np.arange(len(addresses), dtype=np.intp)
        reads = planned_reads(addresses, registers, settings.max_gap, profile.max_block)
        if settings.transport == "tcp":
            inner = ModbusTcpDriver(device.name, ModbusTcpSettings(
                settings.host, settings.port, settings.unit_id, settings.max_gap, profile.max_block, 1,
                settings.backoff_initial, settings.backoff_max), device.poll_interval, device.timeout, reads, registers)
        else:
            slave = Slave(settings.unit_id, device.name, device.poll_interval, device.timeout, tuple(reads), registers)
            inner = ModbusRtuBusDriver(device.name, settings.serial, [slave], registers)
        for poller in ([inner.poller] if settings.transport == "tcp" else [s.poller for s in inner.slaves]):
            poller.whole_polls = True  # a channel's fields may sit in several blocks: interpret whole polls
        return cls(device.name, settings, inner, fields, heartbeat, tag_rows, tag_names, units)

    @property
    def is_down(self) -> bool:
        return self.inner.is_down or self.heartbeat_frozen

    @property
    def stats(self) -> DriverStats:
        """The inner Modbus driver's figures: the panel's polls are its polls."""
        return self.inner.stats

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled."""
        await self.inner.run(RegisterSink(self.register_count, self, sink))

    def publish(self, registers: RegisterSink, sink: SampleSink) -> None:
        """Interpret the registers as they stand and write every tag of the panel."""
        if self._heartbeat_stopped(registers, sink):
            sink.set_quality(self.rows, int(Quality.DEVICE_ERROR))
            return
        rows, values, qualities, read_ats = [], [], [], []
        for channel, indexes in self.fields.items():
            read_at = min(float(registers.read_at[i]) for i in indexes.values())
            reading = read_channel(self.settings.profile,
                                   {name: float(registers.values[i]) for name, i in indexes.items()},
                                   {name: int(registers.quality[i]) for name, i in indexes.items()},
                                   self.units[channel])
            targets = self.tag_rows[channel]
            for role, value, quality in (("concentration", reading.concentration, reading.quality),
                                         ("alarm", reading.alarm_level, reading.status_quality),
                                         ("fault", reading.fault_code, reading.status_quality),
                                         *((threshold_role(level), value, quality)
                                           for level, (value, quality) in reading.thresholds.items())):
                rows.append(targets[role])
                values.append(value if math.isfinite(value) else np.nan)
                qualities.append(int(quality))
                read_ats.append(read_at)
            self._events(channel, reading, sink)
        sink.write(np.array(rows, dtype=np.intp), np.array(values, dtype=np.float64),
                   np.array(qualities, dtype=np.uint8), read_at=np.array(read_ats))

    def _heartbeat_stopped(self, registers: RegisterSink, sink: SampleSink) -> bool:
        if self.heartbeat is None or Quality(int(registers.quality[self.heartbeat])).is_bad:
            return False
        value, now = float(registers.values[self.heartbeat]), time.monotonic()
        if value != self._heartbeat_value:
            self._heartbeat_value, self._heartbeat_changed = value, now
            if self.heartbeat_frozen:
                self.heartbeat_frozen = False
                sink.event(Event("gds_heartbeat_resumed", time.time(), self.name,
                                 f"{self.name}: heartbeat moving again", Priority.INFO, {"heartbeat": value}))
            return False
        if not self.heartbeat_frozen and now - self._heartbeat_changed >= self.settings.heartbeat_timeout:
            self.heartbeat_frozen = True
            sink.event(Event("gds_heartbeat_frozen", time.time(), self.name,
                             f"{self.name}: heartbeat stuck at {value:g} for "
                             f"{self.settings.heartbeat_timeout:g} s; every channel of the panel is DEVICE_ERROR",
                             Priority.HIGH, {"heartbeat": value, "quality": int(Quality.DEVICE_ERROR)}))
        return self.heartbeat_frozen

    def _events(self, channel: int, reading: ChannelReading, sink: SampleSink) -> None:
        """One event per change of maintenance mode or fault of a channel."""
        if reading.status_quality.is_bad:
            return  # unknown: compare the next reading with the last one known
        before = self._last.get(channel)
        self._last[channel] = reading
        tag = self.tag_names.get(channel, f"{self.name}.{channel}")
        data = {"panel": self.name, "channel": channel}
        self._unit_events(tag, data, before, reading, sink)
        old_mode = before.mode if before else None
        if reading.mode != old_mode:
            if old_mode is not None:
                sink.event(Event("gds_maintenance_end", time.time(), tag, f"{tag}: {old_mode} ended",
                                 Priority.INFO, {**data, "mode": old_mode}))
            if reading.mode is not None:
                sink.event(Event("gds_maintenance", time.time(), tag, f"{tag}: channel in {reading.mode}",
                                 Priority.LOW, {**data, "mode": reading.mode}))
        old_fault = before.fault_code if before and before.fault else 0
        new_fault = reading.fault_code if reading.fault else 0
        if new_fault != old_fault:
            if old_fault:
                sink.event(Event("gds_fault_cleared", time.time(), tag, f"{tag}: fault {old_fault} cleared",
                                 Priority.INFO, {**data, "fault_code": old_fault}))
            if new_fault:
                sink.event(Event("gds_fault", time.time(), tag, f"{tag}: channel fault, code {new_fault}",
                                 Priority.HIGH, {**data, "fault_code": new_fault}))

    def _unit_events(self, tag: str, data: dict[str, Any], before: ChannelReading | None, reading: ChannelReading,
                     sink: SampleSink) -> None:
        """One event when the detector's unit starts to disagree with the channel's (or changes), one when
        they agree again."""
        configured = self.units[data["channel"]]
        was = (before.unit_mismatch, before.reported_unit) if before else (False, None)
        if (reading.unit_mismatch, reading.reported_unit) == was:
            return
        unit_data = {**data, "configured_unit": configured, "reported_unit": reading.reported_unit,
                     "unit_code": reading.unit_code}
        if reading.unit_mismatch:
            message = f"{tag}: {unit_mismatch(reading, configured)}; the channel is DEVICE_ERROR"
            log.error("gds %s: %s", self.name, message)
            sink.event(Event("gds_unit_mismatch", time.time(), tag, message, Priority.HIGH,
                             {**unit_data, "quality": int(Quality.DEVICE_ERROR)}))
        elif was[0]:
            log.info("gds %s: %s: unit %s as configured again", self.name, tag, configured)
            sink.event(Event("gds_unit_mismatch_cleared", time.time(), tag,
                             f"{tag}: the detector reports {configured} as configured", Priority.INFO, unit_data))
