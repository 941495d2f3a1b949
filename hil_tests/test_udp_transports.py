"""Modbus UDP and RTU-over-TCP against pymodbus servers serving the simulated plant as real processes.

Both drivers are the Modbus TCP driver with another pymodbus client or framer, so what is checked
here is that the frames really are what the servers expect, that values decode to the same
engineering values as over TCP, and that an outage (the server killed, then started again on the
same port) shows as COMM_FAILURE with one `device_down` and one `device_up`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

import drivers
from gatewayd.config.load import parse_config
from gatewayd.types import Event, Quality
from hil_tests.sim.layout import plant_tags

ROOT = Path(__file__).resolve().parents[1]
TAGS = 9  # the tank: float32, scaled int16, bits of a status word, a coil


class RecordingSink:
    def __init__(self, size: int) -> None:
        self.values = np.full(size, np.nan)
        self.quality = np.full(size, int(Quality.NO_VALUE), dtype=np.uint8)
        self.events: list[Event] = []

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None) -> None:
        self.values[rows] = values
        self.quality[rows] = quality

    def set_quality(self, rows, quality) -> None:
        self.quality[rows] = quality

    def event(self, event: Event) -> None:
        self.events.append(event)


class Server:
    """`python -m hil_tests.sim.rtu_bus udp|rtu-over-tcp`; port 0 first, the same port on restarts."""

    def __init__(self, transport: str) -> None:
        self.transport, self.port = transport, 0
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        argv = [sys.executable, "-m", "hil_tests.sim.rtu_bus", self.transport, "--port", str(self.port),
                "--tags", str(TAGS)]
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("READY "), f"server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)


@pytest.fixture
def servers() -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def start(transport: str) -> Server:
        started.append(Server(transport).start())
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.kill()


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("driver_kind, transport", [("modbus_udp", "udp"),
                                                    ("modbus_rtu_over_tcp", "rtu-over-tcp")])
def test_reads_the_plant_and_survives_a_server_restart(servers, driver_kind, transport):
    server = servers(transport)
    device = {"name": "plc1", "driver": driver_kind, "host": "127.0.0.1", "port": server.port,
              "poll_interval": 0.1, "timeout": 0.3, "backoff_initial": 0.1, "backoff_max": 0.4,
              "tags": plant_tags(TAGS)}
    document = {"gateway": {"id": "gw-test"}, "devices": [device],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    config = parse_config(yaml.safe_dump(document, allow_unicode=True), ROOT / "hil-test.yaml").devices[0]
    driver = drivers.create(config, np.arange(TAGS))
    sink = RecordingSink(TAGS)

    async def scenario() -> None:
        task = asyncio.create_task(driver.run(sink))
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=10)
        level, temperature, pump = sink.values[0], sink.values[1], sink.values[8]
        assert 0.0 <= level <= 10.0 and 0.0 < temperature < 150.0 and pump in (0.0, 1.0)
        server.kill()
        await wait_until(lambda: (sink.quality == Quality.COMM_FAILURE).all(), timeout=10)
        server.start()
        await wait_until(lambda: (sink.quality == Quality.GOOD).all(), timeout=10)
        polls = driver.polls
        await wait_until(lambda: driver.polls >= polls + 5, timeout=10)  # and it keeps polling
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [event.kind for event in sink.events] == ["device_down", "device_up"]
