"""The `mqtt` device kind against a real mosquitto, the driver in this process, the publisher a paho client.

Bad JSON input (malformed, wrong types, missing paths), out-of-order source times, and the Sparkplug B
host's states (birth, data by alias, seq gap, rebirth with new aliases, device and node death, the will
of an older session) are published exactly, message by message, and the tag states checked after each.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.mqtt.driver import MqttDriver  # noqa: E402
from core.types import Quality  # noqa: E402
from hil_tests.harness import Broker, stop_all  # noqa: E402
from hil_tests.recording import RecordingSink, load_device, stop, wait_until  # noqa: E402
from hil_tests.sim.sparkplug_encode import MetricOut, encode_payload  # noqa: E402

STATUS = {"ok": "GOOD", "fault": "SENSOR_FAULT"}


@pytest.fixture
def broker(tmp_path: Path):
    started = Broker(tmp_path / "sensors").start()
    yield started
    stop_all(started)


class Publisher:
    """A plain paho client publishing QoS 1 and waiting for each PUBACK, so the order is the broker's."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str | dict) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start(device: dict[str, Any]) -> tuple[MqttDriver, RecordingSink, asyncio.Task]:
    config = load_device(device)
    sink = RecordingSink(len(config.tags))
    driver = MqttDriver.from_config(config, np.arange(len(config.tags)))
    return driver, sink, asyncio.create_task(driver.run(sink))


def json_device(port: int, **settings: Any) -> dict[str, Any]:
    tag = {"topic": "plant/+/gas/GD-101", "timestamp": "/ts", "timestamp_format": "ms"}
    return {"name": "gas", "driver": "mqtt", "host": "127.0.0.1", "port": port, "transport": "plain",
            "subscribe": ["plant/+/gas/+"], **settings,
            "tags": [{"name": "GD101.CH4", **tag, "value": "/gas/ch4"},
                     {"name": "GD101.H2S", **tag, "value": "/gas/h2s", "quality": "/status", "quality_map": STATUS},
                     {"name": "GD101.BATT", **tag, "value": "/battery/0"},
                     {"name": "GD102.CH4", "topic": "plant/area2/gas/GD-102", "value": "/gas/ch4"}]}


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_bad_json_makes_only_the_affected_tags_decode_errors(broker, version):
    async def scenario():
        driver, sink, task = start(json_device(broker.port, mqtt_version=version))
        publisher = Publisher(broker.port)
        try:
            await wait_until(lambda: not driver.is_down and driver.stats.reconnects == 0 and driver.connections, 10)
            good = {"gas": {"ch4": 12.5, "h2s": 3}, "battery": [87], "ts": 1796149800000, "status": "ok"}
            publisher.send("plant/area1/gas/GD-101", good)
            publisher.send("plant/area2/gas/GD-102", {"gas": {"ch4": 1.0}})
            await wait_until(lambda: driver.stats.polls >= 2, 5)
            assert list(sink.values[:4]) == [12.5, 3.0, 87.0, 1.0] and (sink.quality == Quality.GOOD).all()
            assert list(sink.source_ts[:3]) == [1796149800.0] * 3 and math.isnan(sink.source_ts[3])

            outcomes = []
            for payload in (b"{not json", {**good, "gas": {"ch4": "12.6", "h2s": 4}},  # wrong type
                            {**good, "battery": [], "ts": 1796149801000},  # missing path
                            {**good, "status": "calibrating", "ts": 1796149802000},  # status not in the table
                            {**good, "ts": "yesterday"}):
                polls = driver.stats.polls
                publisher.send("plant/area1/gas/GD-101", payload)
                await wait_until(lambda polls=polls: driver.stats.polls > polls, 5)
                outcomes.append([Quality(code).name for code in sink.quality[:4]])
            errors = driver.stats.decode_errors
            publisher.send("plant/area9/gas/GD-101", {**good, "ts": 1796149803000, "status": "fault"})
            await wait_until(lambda: driver.stats.polls >= 8, 5)
            after_fault = [Quality(code).name for code in sink.quality[:3]], list(sink.values[:3])
        finally:
            publisher.close()
            await stop(task)
        return driver, outcomes, errors, after_fault

    driver, outcomes, errors, after_fault = asyncio.run(scenario())
    assert outcomes == [
        ["DECODE_ERROR", "DECODE_ERROR", "DECODE_ERROR", "GOOD"],
        ["DECODE_ERROR", "GOOD", "GOOD", "GOOD"],
        ["GOOD", "GOOD", "DECODE_ERROR", "GOOD"],
        ["GOOD", "DECODE_ERROR", "GOOD", "GOOD"],
        ["DECODE_ERROR", "DECODE_ERROR", "DECODE_ERROR", "GOOD"],
    ]
    assert errors == 3 + 1 + 1 + 1 + 3  # per tag reading, counted per device
    assert after_fault == (["GOOD", "SENSOR_FAULT", "GOOD"], [12.5, 3.0, 87.0])  # any area, the detector's own


def test_an_out_of_order_reading_is_kept_with_its_source_time_and_flagged(broker):
    async def scenario():
        driver, sink, task = start(json_device(broker.port))
        publisher = Publisher(broker.port)
        seen = []
        try:
            await wait_until(lambda: driver.connections == 1, 10)
            for ts, ch4 in ((1796149805000, 5.0), (1796149801000, 1.0), (1796149806000, 6.0)):
                polls = driver.stats.polls
                publisher.send("plant/a/gas/GD-101", {"gas": {"ch4": ch4, "h2s": 0}, "battery": [1], "ts": ts,
                                                      "status": "ok"})
                await wait_until(lambda polls=polls: driver.stats.polls > polls, 5)
                seen.append((sink.values[0], Quality(sink.quality[0]).name, sink.source_ts[0]))
        finally:
            publisher.close()
            await stop(task)
        return driver, seen

    driver, seen = asyncio.run(scenario())
    assert seen == [(5.0, "GOOD", 1796149805.0), (1.0, "UNCERTAIN", 1796149801.0), (6.0, "GOOD", 1796149806.0)]
    assert driver.stats.out_of_order == 3  # the late reading, for each of the three tags of GD-101


def sparkplug_device(port: int) -> dict[str, Any]:
    return {"name": "edge", "driver": "mqtt", "host": "127.0.0.1", "port": port, "transport": "plain",
            "payload": "sparkplug_b", "group": "site1",
            "tags": [{"name": "N1.UPTIME", "node": "node1", "metric": "uptime"},
                     {"name": "P1.VIB", "node": "node1", "device": "pump-1", "metric": "vibration"},
                     {"name": "P1.TEMP", "node": "node1", "device": "pump-1", "metric": "temperature"},
                     {"name": "P1.RUN", "node": "node1", "device": "pump-1", "metric": "running"},
                     {"name": "P1.MODE", "node": "node1", "device": "pump-1", "metric": "mode"}]}


def nbirth(seq: int, bd_seq: int, uptime: int) -> bytes:
    return encode_payload([MetricOut("bdSeq", "UInt64", bd_seq), MetricOut("uptime", "Int64", uptime, alias=9)],
                          seq=seq, timestamp=1796149800000)


def dbirth(seq: int, aliases: dict[str, int], vib: float, temp: float) -> bytes:
    return encode_payload([MetricOut("vibration", "Float", vib, alias=aliases["vibration"]),
                           MetricOut("temperature", "Double", temp, alias=aliases["temperature"]),
                           MetricOut("running", "Boolean", True, alias=aliases["running"]),
                           MetricOut("mode", "String", "auto", alias=aliases["mode"])],
                          seq=seq, timestamp=1796149800000)


def ddata(seq: int, by_alias: dict[int, tuple[str, Any]], ts: int = 1796149801000) -> bytes:
    return encode_payload([MetricOut(None, datatype, value, alias=alias)
                           for alias, (datatype, value) in by_alias.items()], seq=seq, timestamp=ts)


def test_sparkplug_birth_data_gap_rebirth_with_new_aliases_and_deaths(broker):
    topic = "spBv1.0/site1/{}/node1"
    first = {"vibration": 1, "temperature": 2, "running": 3, "mode": 4}
    swapped = {"vibration": 3, "temperature": 1, "running": 2, "mode": 4}

    async def scenario():
        driver, sink, task = start(sparkplug_device(broker.port))
        publisher = Publisher(broker.port)
        states = {}

        async def send(name: str, kind: str, payload: bytes, device: bool = False) -> None:
            polls = driver.stats.polls
            publisher.send(topic.format(kind) + ("/pump-1" if device else ""), payload)
            await wait_until(lambda: driver.stats.polls > polls, 5)
            states[name] = ([Quality(code).name for code in sink.quality],
                            [None if math.isnan(value) else round(value, 3) for value in sink.values])

        try:
            await wait_until(lambda: driver.connections == 1, 10)
            await send("births", "NBIRTH", nbirth(0, 7, 100))
            await send("dbirth", "DBIRTH", dbirth(1, first, 0.5, 40.0), device=True)
            await send("data", "DDATA", ddata(2, {1: ("Float", 0.75), 2: ("Double", 41.5)}), device=True)
            await send("gap", "DDATA", ddata(4, {1: ("Float", 9.0)}), device=True)  # seq 3 lost
            await send("ignored", "DDATA", ddata(5, {1: ("Float", 9.5)}), device=True)
            await send("old will", "NDEATH", encode_payload([MetricOut("bdSeq", "UInt64", 6)]))
            await send("rebirth", "NBIRTH", nbirth(0, 8, 200))
            await send("rebirth device", "DBIRTH", dbirth(1, swapped, 0.25, 42.0), device=True)
            await send("new aliases", "DDATA", ddata(2, {3: ("Float", 0.125), 1: ("Double", 43.0),
                                                        2: ("Boolean", False)}), device=True)
            await send("ddeath", "DDEATH", encode_payload([], seq=3), device=True)
            await send("after ddeath", "DDATA", ddata(4, {3: ("Float", 5.0)}), device=True)
            await send("ndeath", "NDEATH", encode_payload([MetricOut("bdSeq", "UInt64", 8)]))
        finally:
            publisher.close()
            await stop(task)
        return driver, states

    driver, states = asyncio.run(scenario())
    good4 = ["GOOD"] * 4
    assert states["births"][0][0] == "GOOD" and states["births"][1][0] == 100.0
    assert states["dbirth"] == (good4 + ["DECODE_ERROR"], [100.0, 0.5, 40.0, 1.0, None])
    assert states["data"][1][1:3] == [0.75, 41.5] and states["data"][0][:4] == good4
    assert states["gap"][0] == ["STALE"] * 4 + ["DECODE_ERROR"] and states["gap"][1][1] == 0.75
    assert states["ignored"] == states["gap"]
    assert states["old will"] == states["gap"], "the will of session 7 does not kill session 8's successor"
    assert states["rebirth device"][1][:4] == [200.0, 0.25, 42.0, 1.0]
    assert states["new aliases"][1][1:4] == [0.125, 43.0, 0.0], "aliases follow the latest birth"
    assert states["ddeath"][0][:4] == ["GOOD"] + ["COMM_FAILURE"] * 3
    assert states["after ddeath"] == states["ddeath"]
    assert states["ndeath"][0][:4] == ["COMM_FAILURE"] * 4
    assert driver.stats.sparkplug_seq_gaps == 1
    assert driver.stats.sparkplug_ignored == 3  # the gap message, the data after it, the data after DDEATH


def test_tls_verifies_the_broker_and_presents_the_client_certificate(tmp_path):
    from hil_tests.harness import BrokerTls, free_port
    from hil_tests.test_tls import Authority

    ca, other = Authority(tmp_path / "pki", "plant-ca"), Authority(tmp_path / "pki" / "other", "other-ca")
    server, client = ca.issue("broker", hosts=("127.0.0.1",)), ca.issue("gateway", client=True)
    tls = BrokerTls(free_port(), ca.cert, server.cert, server.key)
    broker = Broker(tmp_path / "tls-broker", tls=tls).start()

    def device(ca_file, with_certificate: bool = True) -> dict[str, Any]:
        files = {"ca_file": str(ca_file)}
        if with_certificate:
            files.update(cert_file=str(client.cert), key_file=str(client.key))
        return {**json_device(tls.port), "transport": "tls", "tls": files, "backoff_initial": 0.2, "backoff_max": 0.5}

    async def scenario():
        verified, sink, task = start(device(ca.cert))
        stranger, stranger_sink, stranger_task = start(device(other.cert))
        anonymous, anonymous_sink, anonymous_task = start(device(ca.cert, with_certificate=False))
        publisher = Publisher(broker.port)  # the plain listener
        try:
            await wait_until(lambda: verified.connections == 1, 10)
            publisher.send("plant/a/gas/GD-101", {"gas": {"ch4": 4.5, "h2s": 0}, "battery": [9], "ts": 1796149800000,
                                                  "status": "ok"})
            await wait_until(lambda: sink.values[0] == 4.5, 5)
            await wait_until(lambda: stranger.stats.failures >= 2 and anonymous.stats.failures >= 2, 10)
        finally:
            publisher.close()
            for running in (task, stranger_task, anonymous_task):
                await stop(running)
        return verified, stranger_sink, anonymous, anonymous_sink

    try:
        verified, stranger_sink, anonymous, anonymous_sink = asyncio.run(scenario())
    finally:
        stop_all(broker)
    assert not verified.is_down and verified.stats.failures == 0
    assert stranger_sink.kinds() == ["device_down"] and stranger_sink.events[0].data["host"] == "127.0.0.1"
    assert "certificate failed verification" in stranger_sink.events[0].data["cause"]
    assert anonymous_sink.kinds() == ["device_down"] and anonymous.connections == 0
    for refused in (stranger_sink, anonymous_sink):
        assert (refused.quality == Quality.COMM_FAILURE).all()
