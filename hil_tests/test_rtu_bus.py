"""The Modbus RTU bus driver against simulated slaves on a socat pseudo-terminal pair.

socat joins two pseudo-terminals back to back: the simulator (`hil_tests.sim.rtu_bus`) answers as
several slaves on one end, the driver (in-process) opens the other as its serial port. Slaves are
turned silent, slow or faulty while the bus runs, and the line itself is pulled by killing socat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.modbus.rtu import ModbusRtuBusDriver
from gatewayd.config.model import DeviceConfig
from gatewayd.types import Quality
from hil_tests.recording import RecordingSink, load_device, stop, wait_until
from hil_tests.sim.rtu_bus import SerialPair, register_value

POLL = 0.1
TIMEOUT = 0.05
PROBE = 1.0
HEALTHY, SILENT, SLOW, FAULTY = (1, 2), 3, 4, 5
UNITS = (*HEALTHY, SILENT, SLOW, FAULTY)


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[Callable[..., SerialPair]]:
    pairs: list[SerialPair] = []

    def start(units: tuple[int, ...] = UNITS, **options: Any) -> SerialPair:
        pairs.append(SerialPair(tmp_path, units, **options).start())
        return pairs[-1]

    try:
        yield start
    finally:
        for pair in pairs:
            pair.close()


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
    pair = serial_pair()
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
        before = {unit: slaves[unit].polls for unit in HEALTHY}
        started = time.monotonic()
        await asyncio.sleep(4.0)
        rates = {unit: (slaves[unit].polls - before[unit]) / (time.monotonic() - started) for unit in HEALTHY}

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
    assert driver.opens == 1 and driver.reconnects == 0, "a bad slave must never cost a reopening of the line"
    for index, tag in enumerate(device.tags):
        register = tag.address.register
        if register.table == "coil":
            assert sink.values[index] == (register.address + tag.address.slave.unit_id) % 2
        else:
            raw = register_value(tag.address.slave.unit_id, register.address)
            expected = raw - 65536 if register.dtype == "int16" and raw >= 32768 else raw
            assert sink.values[index] == expected, tag.name


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
    assert driver.opens == 2 and driver.open_failures >= 2


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
