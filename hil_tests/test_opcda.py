"""The OPC DA gateway driver against a Pyro5 test double of the OpenOPC gateway service, as a process.

The double answers group reads with changing values, bad and uncertain DA qualities (as names and
as raw quality words) and items the server rejects; tests kill it (unreachable), freeze it (no
answer) and restart it, and point the driver at a DA server the gateway does not know.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.opcda.gateway import OpcDaGatewayDriver  # noqa: E402
from gatewayd.config.model import DeviceConfig  # noqa: E402
from core.types import Quality  # noqa: E402
from hil_tests.recording import RecordingSink, load_device, stop, wait_until  # noqa: E402
from hil_tests.sim.opcda_gateway import SERVER_PROGID  # noqa: E402
from hil_tests.simprocess import SimProcess  # noqa: E402

EXPECTED = {
    "Random.Real8": Quality.GOOD, "Random.Int4": Quality.GOOD, "Square.Bool": Quality.GOOD,
    "Word.Good": Quality.GOOD, "Word.GoodHigh": Quality.GOOD, "Word.SensorFailure": Quality.SENSOR_FAULT,
    "Word.CommFailure": Quality.COMM_FAILURE, "Word.LastKnown": Quality.COMM_FAILURE,
    "Word.OutOfService": Quality.MAINTENANCE, "Word.Uncertain": Quality.UNCERTAIN,
    "Word.ConfigError": Quality.DEVICE_ERROR, "Bad.Quality": Quality.DEVICE_ERROR,
    "Text.Value": Quality.DECODE_ERROR, "No.Such.Item": Quality.DEVICE_ERROR,
}


@pytest.fixture
def gateway(sim_processes) -> SimProcess:
    """One `python -m hil_tests.sim.opcda_gateway` child, killed after the test."""
    return sim_processes(SimProcess(["hil_tests.sim.opcda_gateway"], [], "gateway double"))


def device_config(port: int, items: list[str], **settings: Any) -> DeviceConfig:
    return load_device({"name": "da1", "driver": "opcda_gateway", "host": "127.0.0.1", "port": port,
                        "server": SERVER_PROGID, "poll_interval": 0.1, "timeout": 0.5, "backoff_initial": 0.1,
                        "backoff_max": 0.4, **settings,
                        "tags": [{"name": f"T{i}", "item": item} for i, item in enumerate(items)]})


def start_driver(device: DeviceConfig) -> tuple[OpcDaGatewayDriver, RecordingSink, asyncio.Task]:
    sink = RecordingSink(len(device.tags))
    driver = OpcDaGatewayDriver.from_config(device, np.arange(len(device.tags)))
    return driver, sink, asyncio.create_task(driver.run(sink))


def test_group_reads_map_da_quality_and_keep_source_times(gateway):
    items = list(EXPECTED)
    device = device_config(gateway.port, items)

    async def scenario() -> tuple[OpcDaGatewayDriver, RecordingSink, list[float]]:
        driver, sink, task = start_driver(device)
        seen: list[float] = []
        try:
            await wait_until(lambda: driver.stats.polls >= 1, 10)
            seen.append(sink.values[1])
            await wait_until(lambda: driver.stats.polls >= 4, 10)
            seen.append(sink.values[1])
        finally:
            await stop(task)
        return driver, sink, seen

    driver, sink, seen = asyncio.run(scenario())
    for position, (item, quality) in enumerate(EXPECTED.items()):
        assert sink.quality[position] == quality, f"{item}: {Quality(sink.quality[position]).name}"
    assert seen[1] > seen[0], "Random.Int4 counts up between reads"
    good = [i for i, quality in enumerate(EXPECTED.values()) if quality == Quality.GOOD]
    assert (np.abs(sink.source_ts[good] - time.time()) < 30).all()
    assert np.isnan(sink.source_ts[items.index("No.Such.Item")])
    assert driver.stats.sessions == 1 and driver.stats.failures == 0 and sink.kinds() == []


def test_unreachable_and_frozen_gateway_turn_bad_and_recover(gateway):
    device = device_config(gateway.port, ["Random.Real8", "Random.Int4", "Word.Good"])

    async def scenario() -> tuple[OpcDaGatewayDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.quality == Quality.GOOD).all()), 10)
            gateway.signal(signal.SIGKILL)  # unreachable: connection refused
            await wait_until(lambda: bool((sink.quality == Quality.COMM_FAILURE).all()), 5)
            await asyncio.sleep(0.5)
            assert (sink.quality == Quality.COMM_FAILURE).all() and sink.kinds() == ["device_down"]
            assert "unreachable" in sink.events[0].data["cause"]
            await asyncio.to_thread(gateway.start)
            polls = driver.stats.polls
            await wait_until(lambda: driver.stats.polls > polls + 2 and bool((sink.quality == Quality.GOOD).all()), 10)
            gateway.signal(signal.SIGSTOP)  # frozen: no answer within the timeout
            await wait_until(lambda: bool((sink.quality == Quality.COMM_FAILURE).all()), 5)
            gateway.signal(signal.SIGCONT)
            polls = driver.stats.polls
            await wait_until(lambda: driver.stats.polls > polls + 2 and bool((sink.quality == Quality.GOOD).all()), 10)
        finally:
            await stop(task)
        return driver, sink

    driver, sink = asyncio.run(scenario())
    assert sink.kinds() == ["device_down", "device_up", "device_down", "device_up"]
    assert "did not answer within 0.5 s" in sink.events[2].data["cause"]
    assert driver.stats.sessions >= 3  # a new gateway session after each outage


def test_unknown_da_server_is_reported_by_name(gateway):
    device = device_config(gateway.port, ["Random.Real8"], server="Wrong.Server.1")

    async def scenario() -> tuple[OpcDaGatewayDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: driver.stats.failures >= 2, 10)
        finally:
            await stop(task)
        return driver, sink

    driver, sink = asyncio.run(scenario())
    assert sink.kinds() == ["device_down"] and driver.stats.polls == 0
    assert "Wrong.Server.1" in sink.events[0].data["cause"]
    assert sink.quality[0] == Quality.COMM_FAILURE


def hostile_bridge(sim_processes, answer: str) -> SimProcess:
    """One `python -m hil_tests.sim.hostile_bridge --answer ANSWER` child, killed after the test."""
    return sim_processes(SimProcess(["hil_tests.sim.hostile_bridge"], ["--answer", answer], f"{answer} bridge"))


def first_outage(port: int) -> tuple[OpcDaGatewayDriver, RecordingSink]:
    device = device_config(port, ["Random.Real8"])

    async def scenario() -> tuple[OpcDaGatewayDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: driver.stats.failures >= 2, 20)
        finally:
            await stop(task)
        return driver, sink

    return asyncio.run(scenario())


@pytest.mark.parametrize("answer", ["marshal-handshake", "marshal-read"])
def test_a_reply_in_marshal_is_refused_undecoded(sim_processes, answer, monkeypatch):
    """The bridge may not choose the serializer of its replies, at the handshake or on a call."""
    import marshal

    decoded = []
    monkeypatch.setattr(marshal, "loads", lambda *args: decoded.append(args) or {})
    bridge = hostile_bridge(sim_processes, answer)
    driver, sink = first_outage(bridge.port)
    assert sink.kinds() == ["device_down"] and driver.stats.polls == 0
    assert sink.quality[0] == Quality.COMM_FAILURE
    assert sink.events[0].data["cause"] == (f"gateway 127.0.0.1:{bridge.port} answer refused: the bridge answered "
                                            "in marshal; only serpent is accepted (the message was not decoded)")
    assert decoded == [], "marshal never saw the bridge's bytes"


def test_an_oversized_message_is_refused_from_its_header(sim_processes):
    """A reply announcing 1 GiB (and streaming it) is refused before its body is read: no memory growth."""
    import resource

    bridge = hostile_bridge(sim_processes, "oversized")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    driver, sink = first_outage(bridge.port)
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert sink.kinds() == ["device_down"] and driver.stats.polls == 0
    assert sink.events[0].data["cause"] == (f"gateway 127.0.0.1:{bridge.port} answer refused: message too large "
                                            "(1073741824, max=16777216)")
    assert growth_mib < 64, f"the process grew by {growth_mib:.0f} MiB"
