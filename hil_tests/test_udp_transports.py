"""Modbus UDP and RTU-over-TCP against pymodbus servers serving the simulated plant as real processes.

Both drivers are the Modbus TCP driver with another pymodbus client or framer, so what is checked
here is that the frames really are what the servers expect, that values decode to the same
engineering values as over TCP, and that an outage (the server killed, then started again on the
same port) shows as COMM_FAILURE with one `device_down` and one `device_up`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import numpy as np
import pytest

import drivers
from core.types import Quality
from hil_tests.recording import RecordingSink, load_device, stop, wait_until
from hil_tests.sim.layout import plant_tags
from hil_tests.simprocess import SimProcess

TAGS = 9  # the tank: float32, scaled int16, bits of a status word, a coil


@pytest.fixture
def servers(sim_processes) -> Callable[[str], SimProcess]:
    """Starts `python -m hil_tests.sim.rtu_bus udp|rtu-over-tcp` children; all are killed after the test."""

    def start(transport: str) -> SimProcess:
        return sim_processes(SimProcess(["hil_tests.sim.rtu_bus", transport], ["--tags", str(TAGS)], "server"))

    return start


@pytest.mark.parametrize("driver_kind, transport", [("modbus_udp", "udp"),
                                                    ("modbus_rtu_over_tcp", "rtu-over-tcp")])
def test_reads_the_plant_and_survives_a_server_restart(servers, driver_kind, transport):
    server = servers(transport)
    config = load_device({"name": "plc1", "driver": driver_kind, "host": "127.0.0.1", "port": server.port,
                          "poll_interval": 0.1, "timeout": 0.3, "backoff_initial": 0.1, "backoff_max": 0.4,
                          "tags": plant_tags(TAGS)})
    driver = drivers.create(config, np.arange(TAGS))
    sink = RecordingSink(TAGS)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=10)
        level, temperature, pump = sink.values[0], sink.values[1], sink.values[8]
        assert 0.0 <= level <= 10.0 and 0.0 < temperature < 150.0 and pump in (0.0, 1.0)
        server.signal(signal.SIGKILL)
        await wait_until(lambda: (sink.quality == Quality.COMM_FAILURE).all(), timeout=10)
        server.start()
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=10)
        polls = driver.stats.polls
        await wait_until(lambda: driver.stats.polls >= polls + 5, timeout=10)  # and it keeps polling
        await stop(task)

    asyncio.run(scenario())
    assert sink.kinds() == ["device_down", "device_up"]
