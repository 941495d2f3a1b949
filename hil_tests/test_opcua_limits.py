"""OPC UA message bounds against the real simulated server: a response larger than the device's
`max_message_size` is refused with a clear device error and the session rebuilt, never buffered."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.opcua.client import OpcUaDriver  # noqa: E402
from core.types import Quality  # noqa: E402
from hil_tests.recording import RecordingSink, load_device, stop, wait_until  # noqa: E402
from hil_tests.simprocess import SimProcess  # noqa: E402

TAGS = [{"name": "LT101", "node": "ns=2;s=LT101"}, {"name": "HUGE", "node": "ns=2;s=HUGE_TEXT"}]  # a 1 MB string


def run_device(port: int, **limits: int) -> tuple[OpcUaDriver, RecordingSink]:
    device = load_device({"name": "ua1", "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}",
                          "security_policy": "None", "timeout": 2.0, "publishing_interval": 0.2,
                          "backoff_initial": 0.1, "backoff_max": 0.4, **limits, "tags": TAGS})

    async def scenario() -> tuple[OpcUaDriver, RecordingSink]:
        sink = RecordingSink(len(device.tags))
        driver = OpcUaDriver.from_config(device, np.arange(len(device.tags)))
        task = asyncio.create_task(driver.run(sink))
        try:
            await wait_until(lambda: driver.stats.failures >= 2 or (sink.writes[0] >= 3 and sink.writes[1] >= 1), 30)
        finally:
            await stop(task)
        return driver, sink

    return asyncio.run(scenario())


def test_a_response_over_max_message_size_is_refused_and_the_session_rebuilt(sim_processes):
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "1", "--period", "0.2"],
                                      "OPC UA simulator"))
    driver, sink = run_device(server.port, max_message_size=262_144)
    assert driver.stats.failures >= 2 and sink.kinds()[0] == "device_down"
    assert sink.events[0].data["cause"] == "refused: server sent a message of more than max_message_size " \
                                           "(262144 bytes)"
    assert (sink.quality == Quality.COMM_FAILURE).all()

    driver, sink = run_device(server.port)  # the default (16 MiB) takes the same 1 MB value
    assert driver.stats.failures == 0 and sink.kinds() == []
    assert sink.quality[0] == Quality.GOOD and sink.quality[1] == Quality.DECODE_ERROR


def test_chunks_over_max_chunk_count_are_refused(sim_processes):
    """The server sends the 1 MB value in chunks of at most 65,535 bytes: at least 16 of them."""
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "1", "--period", "0.2"],
                                      "OPC UA simulator"))
    driver, sink = run_device(server.port, max_chunk_count=8)
    assert driver.stats.failures >= 2
    assert sink.events[0].data["cause"] == "refused: server sent a message in more than max_chunk_count (8) chunks"
