"""The `websocket` device kind through the real daemon, against a vendor gateway simulator.

`hil_tests.sim.ws_source` (the `websockets` package) pushes JSON readings of two gas detectors over
one connection once the gateway has subscribed, records every message it sent, and on command drops
the connection, stops answering pings, sends garbage frames or floods. What arrives upstream is
compared with that record: every reading with its value and source time, sent before it arrived.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from core.types import Quality
from hil_tests.conftest import Plant
from hil_tests.harness import CommandedProcess
from hil_tests.test_end_to_end import events_of
from hil_tests.test_gds import qualities, wait_upstream
from hil_tests.test_tls import Authority

TAGS = {"GD201": "GD-201", "GD202": "GD-202"}
SUBSCRIBE = {"op": "subscribe", "sensors": list(TAGS.values())}


class Source(CommandedProcess):
    """The simulator process, driven over stdin; `sent()` reads its record of what it sent."""

    def __init__(self, record: Path, *options: str) -> None:
        self.record = record
        super().__init__([sys.executable, "-m", "hil_tests.sim.ws_source", "--port", "0", "--period", "0.2",
                          "--record", str(record), "--commands", *options], ready="READY ")
        self.port = int(self.ready_line.split()[1])

    def send(self, command: str) -> None:
        assert self.ask(command) == f"OK {command}"

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def sent(self) -> dict[str, set[tuple[int, float]]]:
        """Per sensor: (source time in ms, value) of every well-formed reading sent."""
        readings: dict[str, set[tuple[int, float]]] = defaultdict(set)
        for entry in self.entries():
            try:
                document = json.loads(entry.get("payload", ""))
            except ValueError:
                continue
            if isinstance(document.get("ch4"), float) and document["ts"]:
                readings[document["id"]].add((document["ts"], document["ch4"]))
        return readings

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def source_factory(tmp_path: Path):
    started: list[Source] = []

    def start(*options: str) -> Source:
        source = Source(tmp_path / f"sent{len(started)}.jsonl", *options)
        started.append(source)
        return source

    yield start
    for source in started:
        source.close()


def websocket_device(url: str, **extra) -> dict:
    tags = [{"name": tag, "unit": "%LEL", "value": "/ch4", "timestamp": "/ts", "timestamp_format": "ms",
             "quality": "/status", "quality_map": {"ok": "GOOD", "fault": "SENSOR_FAULT"}, "match": {"/id": sensor}}
            for tag, sensor in TAGS.items()]
    return {"name": "ws-gas", "driver": "websocket", "url": url, "subscribe": SUBSCRIBE, "report": "every_read",
            "publish_interval": 0.2, "ping_interval": 0.5, "ping_timeout": 0.5, "timeout": 3.0,
            "backoff_initial": 0.2, "backoff_max": 0.5, "queue_limit": 50, "max_messages_per_second": 500,
            "tags": tags, **extra}


def upstream(plant: Plant) -> dict[str, list[tuple[int, float | None, int, int | None]]]:
    """Every sample as (ts_ms, value, quality, source_ts_ms), per tag."""
    result: dict[str, list] = defaultdict(list)
    for batch in plant.report().batches:
        body = batch.body
        columns = body["samples"]
        for row in zip(columns["tag"], columns["ts"], columns["value"], columns["quality"], columns["source_ts"]):
            result[body["tags"][row[0]]].append(row[1:])
    return result


def device_events(plant: Plant, kind: str) -> list[dict]:
    return [event for event in events_of(plant, kind) if event["source"] == "ws-gas"]


def assert_readings_match_what_was_sent(plant: Plant, source: Source) -> None:
    """Every GOOD sample upstream is a reading the source sent (value and source time), and arrived after it."""
    sent = source.sent()
    for tag, sensor in TAGS.items():
        good = [(ts, value, source_ts) for ts, value, quality, source_ts in upstream(plant)[tag]
                if quality == Quality.GOOD]
        assert good, tag
        for ts, value, source_ts in good:
            assert (source_ts, value) in sent[sensor], (tag, source_ts, value)
            assert 0 <= ts - source_ts < 5000, (tag, ts, source_ts)


def test_readings_faults_and_reconnects_arrive_upstream(plant_factory, source_factory):
    source = source_factory()
    plant = plant_factory(tags=4, poll_interval=0.5, scan_interval=0.25,
                          extra_devices=[websocket_device(f"ws://127.0.0.1:{source.port}/feed")])
    plant.start_daemon()
    wait_upstream(plant, lambda s: all(qualities(s, tag).count(Quality.GOOD) >= 10 for tag in TAGS),
                  "ten readings of each detector")
    subscriptions = [entry["subscribed"] for entry in source.entries() if "subscribed" in entry]
    assert subscriptions and json.loads(subscriptions[0]) == SUBSCRIBE

    # every reading sent up to now arrives (each in a sample of its own: report every_read)
    sent_so_far = {sensor: set(readings) for sensor, readings in source.sent().items()}
    assert all(len(sent_so_far[sensor]) >= 10 for sensor in TAGS.values())
    wait_upstream(plant, lambda s: all(sent_so_far[sensor] <= {(row[3], row[1]) for row in upstream(plant)[tag]}
                                       for tag, sensor in TAGS.items()), "every reading sent so far")
    assert_readings_match_what_was_sent(plant, source)

    # garbage: the detector whose message lacked its value or had a string is DECODE_ERROR, the other not
    outages = len(device_events(plant, "device_down"))  # a slow first handshake under load may have been one
    ups = len(device_events(plant, "device_up"))
    source.send("garbage")
    wait_upstream(plant, lambda s: Quality.DECODE_ERROR in qualities(s, "GD201"), "DECODE_ERROR of GD201")
    wait_upstream(plant, lambda s: qualities(s, "GD201")[-1] == Quality.GOOD, "GD201 good again")
    assert Quality.DECODE_ERROR not in qualities(upstream_qualities(plant), "GD202")
    assert len(device_events(plant, "device_down")) == outages, "garbage frames are no reason to drop the connection"

    # a gateway that stops answering pings is dropped by the watchdog, and reconnected
    source.send("mute")
    wait_upstream(plant, lambda s: len(device_events(plant, "device_up")) > ups, "reconnected after the mute")
    down = device_events(plant, "device_down")[outages]
    assert "1011" in down["data"]["cause"] and "ping" in down["data"]["cause"], down
    assert down["data"]["url"] == f"ws://127.0.0.1:{source.port}/feed"

    # a connection lost without a close frame: COMM_FAILURE, then readings again on a new connection
    source.send("drop")
    wait_upstream(plant, lambda s: len(device_events(plant, "device_up")) > ups + 1, "reconnected after the drop")
    assert "without a close frame" in device_events(plant, "device_down")[outages + 1]["data"]["cause"]
    marks = upstream(plant)["GD202"]
    failures = [index for index, row in enumerate(marks) if row[2] == Quality.COMM_FAILURE]
    assert failures, "the outage reached upstream"
    wait_upstream(plant, lambda s: qualities(s, "GD202")[-1] == Quality.GOOD, "GD202 good after the drop")
    connections = len(device_events(plant, "device_up")) + 1 - outages  # the first needs no device_up unless down
    assert len([entry for entry in source.entries() if "subscribed" in entry]) == connections, "subscribed each time"

    # a sensor that goes silent turns STALE
    source.send("pause")
    wait_upstream(plant, lambda s: qualities(s, "GD201")[-1] == Quality.STALE, "STALE while the source is silent")
    source.send("resume")

    # a flood beyond the queue is bounded and reported as a gap
    source.send("flood 3000")
    wait_upstream(plant, lambda s: device_events(plant, "gap"), "the gap event of the flood")
    gap = device_events(plant, "gap")[0]["data"]
    assert gap["action"] == "dropped" and 0 < gap["messages"] < 3000, gap
    assert set(gap["tags"]) == set(TAGS)
    assert_readings_match_what_was_sent(plant, source)


def upstream_qualities(plant: Plant) -> dict[str, list[tuple[int, float | None, int]]]:
    return {tag: [row[:3] for row in rows] for tag, rows in upstream(plant).items()}


def test_wss_verifies_the_server_and_presents_a_client_certificate(plant_factory, source_factory, tmp_path):
    ca, stranger = Authority(tmp_path / "ca", "plant-ca"), Authority(tmp_path / "other", "other-ca")
    server, client = ca.issue("vendor-gateway", hosts=("127.0.0.1",)), ca.issue("gatewayd", client=True)
    trusted = source_factory("--cert", str(server.cert), "--key", str(server.key), "--client-ca", str(ca.cert))
    impostor_cert = stranger.issue("impostor", hosts=("127.0.0.1",))
    impostor = source_factory("--cert", str(impostor_cert.cert), "--key", str(impostor_cert.key))
    tls = {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key)}
    good = websocket_device(f"wss://127.0.0.1:{trusted.port}/feed", tls=tls)
    bad = {**websocket_device(f"wss://127.0.0.1:{impostor.port}/feed", tls=tls), "name": "ws-impostor",
           "tags": [{**tag, "name": f"X{tag['name']}"} for tag in good["tags"]]}
    plant = plant_factory(tags=4, poll_interval=0.5, scan_interval=0.25, extra_devices=[good, bad])
    plant.start_daemon()
    wait_upstream(plant, lambda s: Quality.GOOD in qualities(s, "GD201") and Quality.GOOD in qualities(s, "GD202"),
                  "readings over wss")
    wait_upstream(plant, lambda s: [e for e in events_of(plant, "device_down") if e["source"] == "ws-impostor"],
                  "the impostor refused")
    refused = [e for e in events_of(plant, "device_down") if e["source"] == "ws-impostor"][0]["data"]["cause"]
    assert "CERTIFICATE_VERIFY_FAILED" in refused, refused
    assert Quality.GOOD not in qualities(upstream_qualities(plant), "XGD201")
    assert not [entry for entry in impostor.entries() if "subscribed" in entry], "nothing sent to an impostor"
