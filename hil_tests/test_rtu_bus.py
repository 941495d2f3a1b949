"""The Modbus RTU bus driver against simulated slaves on a socat pseudo-terminal pair.

socat joins two pseudo-terminals back to back: the simulator (`hil_tests.sim.rtu_bus`) answers as
several slaves on one end, the driver (in-process) opens the other as its serial port. Slaves are
turned silent, slow or faulty while the bus runs, and the line itself is pulled by killing socat.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.modbus.rtu import ModbusRtuBusDriver
from gatewayd.config.model import DeviceConfig
from core.types import Quality
from hil_tests.recording import RecordingSink, load_device, stop, wait_until
from hil_tests.sim.rtu_bus import bit_value, register_value

POLL = 0.1
TIMEOUT = 0.05
PROBE = 1.0
HEALTHY, SILENT, SLOW, FAULTY = (1, 2), 3, 4, 5
UNITS = (*HEALTHY, SILENT, SLOW, FAULTY)


def bus_config(port: Path, units: tuple[int, ...] = UNITS, **settings: Any) -> DeviceConfig:
    """A bus whose slaves each have a block at 0..1 and one at 200, through the real config loader."""
    slaves = [{"unit_id": unit, "tags": [
        {"name": f"U{unit}_R0", "address": 0},
        {"name": f"U{unit}_R1", "address": 1, "type": "int16"},
        {"name": f"U{unit}_R200", "table": "input", "address": 200},
        {"name": f"U{unit}_C3", "table": "coil", "address": 3, "type": "bool"},
    ]} for unit in units]
    return load_device({"name": "bus1", "driver": "modbus_rtu", "port": str(port), "baud": 19200, "parity": "E",
                        "poll_interval": POLL, "timeout": TIMEOUT, "probe_interval": PROBE, "backoff_initial": 0.1,
                        "backoff_max": 0.2, **settings, "slaves": slaves})


def rows_of(device: DeviceConfig, unit: int) -> np.ndarray:
    return np.array([index for index, tag in enumerate(device.tags) if tag.address.slave.unit_id == unit])


def test_bad_slaves_cost_the_healthy_ones_nothing_and_recover_by_themselves(serial_pair):
    pair = serial_pair(UNITS)
    device = bus_config(pair.master)
    driver = ModbusRtuBusDriver.from_config(device, np.arange(len(device.tags)))
    sink = RecordingSink(len(device.tags))
    slaves = {slave.unit_id: slave for slave in driver.slaves}
    pair.mode(SILENT, "silent")
    pair.mode(SLOW, "slow")
    pair.mode(FAULTY, "faulty")

    async def scenario() -> dict[int, float]:
        task = asyncio.create_task(driver.run(sink))
        await asyncio.sleep(1.0)  # the bad slaves fail their first polls and their circuits open
        before = {unit: slaves[unit].stats.polls for unit in HEALTHY}
        started = time.monotonic()
        await asyncio.sleep(4.0)
        rates = {unit: (slaves[unit].stats.polls - before[unit]) / (time.monotonic() - started) for unit in HEALTHY}

        silent, slow, faulty = (rows_of(device, unit) for unit in (SILENT, SLOW, FAULTY))
        assert (sink.quality[silent] == Quality.COMM_FAILURE).all()
        assert (sink.quality[slow] == Quality.COMM_FAILURE).all()
        # the faulty slave refuses addresses below 100 with an exception and garbles the rest
        names = [tag.name for tag in device.tags]
        assert sink.quality[names.index("U5_R0")] == Quality.DEVICE_ERROR
        assert sink.quality[names.index("U5_C3")] == Quality.DEVICE_ERROR
        assert sink.quality[names.index("U5_R200")] == Quality.DECODE_ERROR
        assert sorted(sink.sources("device_down")) == ["bus1.3", "bus1.4", "bus1.5"]
        assert all(slaves[unit].probes >= 2 for unit in (SILENT, SLOW, FAULTY)), "open circuits are probed"

        for unit in (SILENT, SLOW, FAULTY):
            pair.mode(unit, "ok")
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=PROBE * 4 + 2)
        await stop(task)
        return rates

    rates = asyncio.run(scenario())
    for unit, rate in rates.items():
        assert rate >= 0.85 / POLL, f"unit {unit} polled {rate:.2f}/s, configured {1 / POLL:.0f}/s"
    assert sorted(sink.sources("device_up")) == ["bus1.3", "bus1.4", "bus1.5"]
    assert driver.opens == 1 and driver.stats.reconnects == 0, "a bad slave must never cost a reopening of the line"
    for index, tag in enumerate(device.tags):
        assert sink.values[index] == served_value(tag), tag.name


def served_value(tag) -> float:
    """What the simulator's slave serves at the tag's address, as the tag decodes it."""
    register = tag.address.register
    if register.table == "coil":
        return bit_value(tag.address.slave.unit_id, register.address)
    raw = register_value(tag.address.slave.unit_id, register.address)
    return raw - 65536 if register.dtype == "int16" and raw >= 32768 else raw


class TruthCheckingSink(RecordingSink):
    """A RecordingSink that notes every GOOD value differing from what the slave serves, and every
    row that was ever anything but GOOD."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(len(device.tags))
        self.truth = np.array([served_value(tag) for tag in device.tags], dtype=float)
        self.wrong_good: list[tuple[int, float]] = []
        self.ever_bad = np.zeros(len(device.tags), dtype=bool)

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None, read_at=None) -> None:
        rows, values = np.asarray(rows), np.asarray(values, dtype=float)
        qualities = np.broadcast_to(np.asarray(quality), rows.shape)
        good = qualities == Quality.GOOD
        wrong = good & (values != self.truth[rows])
        self.wrong_good += list(zip(rows[wrong].tolist(), values[wrong].tolist()))
        self.ever_bad[rows[~good]] = True
        super().write(rows, values, quality, source_ts, read_at)

    def set_quality(self, rows, quality, read_at=None) -> None:
        if quality != Quality.GOOD:
            self.ever_bad[rows] = True
        super().set_quality(rows, quality, read_at)


VICTIM, GARBAGE, IMPOSTOR, REFUSING = 2, 5, 6, 7


def test_an_impostor_frame_before_the_true_reply_is_a_collision_never_a_good_value(serial_pair):
    """Unit 6 answers every request for unit 2 with unit 2's id, a valid CRC and wrong values, just
    before unit 2's own reply; unit 5 answers garbage; unit 7 answers only exceptions; unit 1 is healthy."""
    units = (1, VICTIM, GARBAGE, IMPOSTOR, REFUSING)
    pair = serial_pair(units, baud=19200)
    device = bus_config(pair.master, units)
    driver = ModbusRtuBusDriver.from_config(device, np.arange(len(device.tags)))
    sink = TruthCheckingSink(device)
    slaves = {slave.unit_id: slave for slave in driver.slaves}
    pair.mode(IMPOSTOR, "impostor", VICTIM)
    pair.mode(GARBAGE, "garbage")
    pair.mode(REFUSING, "exception")
    victim, garbage, healthy = rows_of(device, VICTIM), rows_of(device, GARBAGE), rows_of(device, 1)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: driver.circuit_open(slaves[REFUSING]) and slaves[VICTIM].stats.collisions >= 3,
                         timeout=10)
        probes, started = slaves[REFUSING].probes, time.monotonic()
        await asyncio.sleep(3 * PROBE)
        probed = slaves[REFUSING].probes - probes
        assert 1 <= probed <= (time.monotonic() - started) / PROBE + 1, \
            f"a slave that only refuses is probed every {PROBE} s, not polled: {probed} probes"
        assert (sink.quality[victim] == Quality.DECODE_ERROR).all()
        assert (sink.quality[garbage] == Quality.DECODE_ERROR).all()
        assert (sink.quality[rows_of(device, REFUSING)] == Quality.DEVICE_ERROR).all()
        assert sorted(sink.sources("device_down")) == ["bus1.2", "bus1.5", "bus1.7"]
        down = {event.source: event.data["cause"] for event in sink.events if event.kind == "device_down"}
        assert "collision" in down["bus1.2"] and "unit 2 (valid CRC)" in down["bus1.2"], down["bus1.2"]
        assert "exception 0x02" in down["bus1.7"], down["bus1.7"]

        pair.mode(IMPOSTOR, "ok")  # the impostor repaired: the victim's own replies come through
        await wait_until(lambda: (sink.quality[victim] == Quality.GOOD).all(), timeout=PROBE * 4 + 2)
        await stop(task)

    asyncio.run(scenario())
    assert sink.wrong_good == [], "a GOOD sample carried a value the slave never served"
    assert not sink.ever_bad[healthy].any(), "the healthy slave left GOOD"
    assert not sink.ever_bad[rows_of(device, IMPOSTOR)].any(), "the impostor's own replies are sound"
    assert (sink.quality[healthy] == Quality.GOOD).all() and slaves[1].stats.collisions == 0
    assert driver.stats.collisions == slaves[VICTIM].stats.collisions >= 3
    assert sink.sources("device_up") == ["bus1.2"]
    assert driver.opens == 1


def test_a_pulled_line_is_reopened_and_reported_once(serial_pair):
    pair = serial_pair(HEALTHY)
    device = bus_config(pair.master, HEALTHY)
    driver = ModbusRtuBusDriver.from_config(device, np.arange(len(device.tags)))
    sink = RecordingSink(len(device.tags))

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=5)
        pair.pull()
        await wait_until(lambda: (sink.quality == Quality.COMM_FAILURE).all(), timeout=5)
        await asyncio.sleep(1.0)  # several failed reopenings, still one event
        assert sink.sources("device_down") == ["bus1"]
        pair.start()
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=5)
        await stop(task)

    asyncio.run(scenario())
    assert sink.sources("device_up") == ["bus1"]
    assert driver.opens == 2 and driver.line_stats.failures >= 2


def test_rs485_mode_on_a_port_without_it_names_the_cause(serial_pair):
    pair = serial_pair(HEALTHY)
    device = bus_config(pair.master, HEALTHY, rs485=True)
    driver = ModbusRtuBusDriver.from_config(device, np.arange(len(device.tags)))
    sink = RecordingSink(len(device.tags))

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: bool(sink.events), timeout=5)
        await stop(task)

    asyncio.run(scenario())
    assert sink.events[0].kind == "device_down"
    assert "cannot enable RS-485 mode" in sink.events[0].data["cause"]
    assert (sink.quality == Quality.COMM_FAILURE).all()
