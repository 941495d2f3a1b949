"""The Modbus TCP driver against the simulated PLC running as a real process on loopback.

Each test runs the driver in-process (asyncio.run) and records what it hands to a small fake sink.
Simulators are killed, frozen and restarted with signals, like a PLC losing power or hanging.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus.config import ADDRESS_SPACE, ModbusAddress
from drivers.modbus.plan import plan_blocks
from drivers.modbus.tcp import ModbusTcpDriver
from gatewayd.config.model import DeviceConfig
from core.types import Priority, Quality
from hil_tests.recording import RecordingSink, load_device, stop, wait_until
from hil_tests.sim.layout import MARKER_ADDRESS, MAX_TAGS, plant_tags
from hil_tests.simprocess import SimProcess

POLL = 0.1
TIMEOUT = 0.3


@pytest.fixture
def plcs(sim_processes) -> Callable[[int], SimProcess]:
    """Starts `python -m hil_tests.sim.plc` children with a number of tags; all are killed after the test."""

    def start(tags: int) -> SimProcess:
        options = ["--tags", str(tags), "--period", str(POLL), "--seed", "7"]
        return sim_processes(SimProcess(["hil_tests.sim.plc"], options, "simulator"))

    return start


def device_config(port: int, tags: list[dict[str, Any]], **settings: Any) -> DeviceConfig:
    """The device through the real config loader, so the layout's tag dicts are checked as YAML too."""
    return load_device({"name": "plc1", "driver": "modbus_tcp", "host": "127.0.0.1", "port": port,
                        "poll_interval": POLL, "timeout": TIMEOUT, "backoff_initial": 0.1, "backoff_max": 0.4,
                        **settings, "tags": tags})


def scattered_rows(count: int) -> np.ndarray:
    """Point-table rows that are neither contiguous nor in tag order, to catch row mix-ups."""
    return np.arange(count)[::-1] * 2 + 3


def test_layout_fits_and_plans_for_ten_thousand_tags():
    tags = plant_tags(10_000, marker=True)
    assert len(tags) == 10_001 and len({tag["name"] for tag in tags}) == 10_001
    assert tags[0]["name"] == "LT101" and tags[-1]["name"] == "MARKER"
    addresses = [ModbusAddress(t["table"], t["address"], t["type"], t.get("bit"), scale=t.get("scale", 1.0))
                 for t in tags]
    assert max(address.end for address in addresses) <= ADDRESS_SPACE
    fewest = len(plan_blocks(addresses, ADDRESS_SPACE, 125))  # an unlimited gap budget: the fewest reads
    assert fewest <= len(plan_blocks(addresses, 10, 125)) <= fewest + 1  # the default gap budget bridges the holes
    assert len(plan_blocks(addresses, 2, 125)) == 1000 + 3  # a budget below the holes reads slot by slot
    assert len(plant_tags(MAX_TAGS)) == MAX_TAGS
    with pytest.raises(ValueError, match="room for"):
        plant_tags(MAX_TAGS + 1)


class StampingSink(RecordingSink):
    """Also keeps (first row, read_at) of every write, in order."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.stamps: list[tuple[int, float]] = []

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None, read_at=None) -> None:
        super().write(rows, values, quality, source_ts, read_at)
        self.stamps.append((int(np.asarray(rows)[0]), read_at))


def test_values_arrive_with_good_quality_and_marker_writes_come_through(plcs):
    plc = plcs(120)
    tags = plant_tags(120, marker=True)
    device = device_config(plc.port, tags)
    rows = scattered_rows(len(tags))
    row = dict(zip((tag["name"] for tag in tags), rows))
    sink = StampingSink(rows.max() + 1)
    driver = ModbusTcpDriver.from_config(device, rows)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: driver.stats.polls >= 3, 2.0)
        assert (sink.quality[rows] == Quality.GOOD).all()
        # the test writes, as a benchmark would; the driver has no write path
        async with AsyncModbusTcpClient("127.0.0.1", port=plc.port, retries=0, reconnect_delay=0) as client:
            assert (await client.write_register(MARKER_ADDRESS, 4242, device_id=1)).isError() is False
            refused = await client.write_register(0, 1, device_id=1)
            assert refused.isError() and refused.exception_code == 2  # only MARKER is writable
        await wait_until(lambda: sink.values[row["MARKER"]] == 4242, 1.0)
        await stop(task)

    asyncio.run(scenario())
    plc.signal(signal.SIGTERM)
    assert plc.process.wait(timeout=5) == 0  # a clean exit, so harnesses can tell a crash from a stop
    for tag in tags:
        low, high = tag["range"]
        assert low <= sink.values[row[tag["name"]]] <= high, tag["name"]
    assert sink.values[row["P101"]] in (0.0, 1.0)
    assert sink.values[row["XV101"]] == sink.values[row["P101"]]  # the inlet valve opens with the pump
    assert sink.events == []
    assert driver.stats.requests_per_poll == 4  # tank holding 0..16, pump coil, generic inputs 0..222 in two
    # every block carries the time its own answer arrived: within a poll, each block was read after the last
    order = [int(read.rows[0]) for read in driver.poller.reads]
    polls = [sink.stamps[i:i + len(order)] for i in range(len(sink.stamps) - len(order) + 1)
             if [row for row, _ in sink.stamps[i:i + len(order)]] == order]
    assert len(polls) >= 3
    for poll in polls:
        times = [read_at for _, read_at in poll]
        assert times == sorted(set(times)), times
    assert driver.stats.polls >= 3 and driver.stats.failures == 0 and 0 < driver.stats.last_poll_latency < POLL


def test_an_exception_response_marks_only_its_block(plcs, caplog):
    plc = plcs(30)
    tags = plant_tags(30) + [{"name": "FAR", "table": "holding", "address": 5000, "type": "uint16"}]
    rows = scattered_rows(len(tags))
    sink = RecordingSink(rows.max() + 1)
    driver = ModbusTcpDriver.from_config(device_config(plc.port, tags), rows)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: driver.stats.polls >= 3, 2.0)
        await stop(task)

    with caplog.at_level(logging.DEBUG, logger="gatewayd.drivers.modbus"):
        asyncio.run(scenario())
    assert sink.quality[rows[-1]] == Quality.DEVICE_ERROR
    assert (sink.quality[rows[:-1]] == Quality.GOOD).all()
    assert sink.events == [] and driver.stats.block_errors >= 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["device plc1: holding 5000..5000: exception 0x02 (illegal data address)"]


def test_a_killed_plc_goes_down_once_and_comes_back(plcs, caplog):
    plc = plcs(60)
    tags = plant_tags(60)
    rows = scattered_rows(len(tags))
    sink = RecordingSink(rows.max() + 1)
    driver = ModbusTcpDriver.from_config(device_config(plc.port, tags), rows)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: driver.stats.polls >= 2, 2.0)
        plc.signal(signal.SIGKILL)
        went_bad = await wait_until(lambda: (sink.quality[rows] == Quality.COMM_FAILURE).all(), 2.0)
        assert went_bad <= POLL + TIMEOUT + 0.2
        await asyncio.sleep(1.0)  # several reconnect attempts while it stays dead
        assert sink.kinds() == ["device_down"] and driver.stats.failures >= 3
        await asyncio.to_thread(plc.start)
        await wait_until(lambda: "device_up" in sink.kinds(), 3.0)
        polls = driver.stats.polls
        await wait_until(lambda: driver.stats.polls >= polls + 2, 1.0)
        await stop(task)

    with caplog.at_level(logging.DEBUG, logger="gatewayd.drivers.modbus"):
        asyncio.run(scenario())
    down, up = sink.events
    assert (down.kind, down.source, down.priority) == ("device_down", "plc1", Priority.HIGH)
    assert down.data["quality"] == Quality.COMM_FAILURE and down.data["port"] == plc.port
    assert down.data["cause"] in down.message
    assert up.kind == "device_up" and up.data["down_for"] >= 1.0
    assert (sink.quality[rows] == Quality.GOOD).all()
    assert driver.stats.reconnects >= 1 and not driver.is_down
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in loud if " down: " in m]) == 1, loud
    assert len([r for r in caplog.records if "still down" in r.getMessage() and r.levelno == logging.DEBUG]) >= 2


def test_a_frozen_plc_does_not_slow_down_a_healthy_one(plcs):
    healthy, frozen = plcs(200), plcs(200)
    frozen.signal(signal.SIGSTOP)  # accepts connections in the kernel, never answers
    tags = plant_tags(200)
    rows = np.arange(len(tags))
    sinks = RecordingSink(len(tags)), RecordingSink(len(tags))
    drivers = [ModbusTcpDriver.from_config(device_config(plc.port, tags, timeout=0.5), rows)
               for plc in (healthy, frozen)]
    run_for = 1.5

    async def scenario() -> None:
        tasks = [asyncio.create_task(driver.run(sink)) for driver, sink in zip(drivers, sinks)]
        await asyncio.sleep(run_for)
        for task in tasks:
            await stop(task)

    asyncio.run(scenario())
    good, stuck = drivers
    assert good.stats.polls >= 0.8 * run_for / POLL and good.stats.failures == 0
    assert (sinks[0].quality == Quality.GOOD).all()
    assert stuck.stats.polls == 0 and stuck.stats.failures >= 1
    assert (sinks[1].quality == Quality.COMM_FAILURE).all() and sinks[1].kinds() == ["device_down"]
    assert "no response within 0.5 s" in sinks[1].events[0].message


def test_cancelling_in_the_middle_of_a_poll_always_stops_the_driver(plcs):
    """Python 3.11's wait_for (inside pymodbus) can drop a cancellation that meets a response."""
    plc = plcs(2000)
    tags = plant_tags(2000)
    device = device_config(plc.port, tags, poll_interval=0.05)
    rng = np.random.default_rng(3)

    async def scenario() -> int:
        stuck = 0
        for _ in range(10):
            driver = ModbusTcpDriver.from_config(device, np.arange(len(tags)))
            task = asyncio.create_task(driver.run(RecordingSink(len(tags))))
            await asyncio.sleep(0.05 + 0.05 * rng.random())  # mostly mid-request: a poll takes ~20 ms
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=0.5)
            stuck += not done
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=0.5)
        return stuck

    assert asyncio.run(scenario()) == 0
