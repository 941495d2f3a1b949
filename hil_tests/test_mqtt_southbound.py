"""Smart sensors over MQTT through the real daemon: a simulated fleet (JSON gas detectors and a Sparkplug B
edge node, hil_tests/sim/sensor_fleet.py) publishes to a real mosquitto, the daemon subscribes and sends
signed batches to the platform's broker, where a verifying receiver compares what arrived with what the
fleet's broker acknowledged.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewayd.keys import load_public_key
from core.types import Quality
from gatewayd.platform.receiver import Receiver
from gatewayd.platform.verify import ChainVerifier
from hil_tests.harness import Broker, CommandedProcess, Daemon, make_key, stop_all

pytestmark = pytest.mark.solo  # judged by timing: `make test` runs it alone

GATEWAY_ID = "GW-MQTT-001"
TOPIC = f"gatewayd/{GATEWAY_ID}/batch"
DETECTORS = ("GD-001", "GD-002", "GD-003")
PUMP = ("vibration", "temperature", "running")


class Fleet(CommandedProcess):
    """`python -m hil_tests.sim.sensor_fleet --commands`, driven through its stdin."""

    def __init__(self, port: int, *options: str) -> None:
        super().__init__([sys.executable, "-m", "hil_tests.sim.sensor_fleet", "--port", str(port), "--commands",
                          *options], ready="READY")

    def command(self, line: str) -> dict[str, Any]:
        return json.loads(self.ask(line))  # `quiet` waits up to 30 s for acknowledgements: ask's 45 s cover it

    def acked(self) -> list[tuple[str, float, int]]:
        return [tuple(entry) for entry in self.command("stats")["acked"]]


class Upstream:
    """What reached the platform: every sample and event of the verified batches."""

    def __init__(self, receiver: Receiver, workdir: Path) -> None:
        self.receiver, self.workdir = receiver, workdir

    def wait_quiet(self, seconds: float = 1.5) -> None:
        count = -1
        while count != len(self.receiver.frames()):
            count = len(self.receiver.frames())
            time.sleep(seconds)

    def batches(self) -> list[dict]:
        verifier = ChainVerifier(load_public_key(self.workdir / "signing.key.pub"), gateway_id=GATEWAY_ID)
        for frame in self.receiver.frames():
            verifier.feed(frame)
        report = verifier.report()
        assert report.ok, report.format()
        return [batch.body for batch in report.batches]

    def samples(self) -> dict[str, list[tuple[int, float | None, int, int | None]]]:
        """(gateway ts ms, value, quality, source ts ms) per tag, in the order sent."""
        result: dict[str, list] = defaultdict(list)
        for body in self.batches():
            columns = body["samples"]
            for index, ts, value, quality, source in zip(columns["tag"], columns["ts"], columns["value"],
                                                         columns["quality"], columns["source_ts"]):
                result[body["tags"][index]].append((ts, value, quality, source))
        return result

    def events(self, kind: str) -> list[dict]:
        return [event for body in self.batches() for event in body["events"] if event["kind"] == kind]


@pytest.fixture
def rig(tmp_path: Path):
    """The platform's broker with a receiver; processes started by the test are stopped at its end."""
    started: list[Any] = []
    platform = Broker(tmp_path / "platform").start()
    started.append(platform)
    receiver = Receiver("127.0.0.1", platform.port, TOPIC, insecure_plain=True, capture_path=tmp_path / "capture.bin",
                        client_id="hil-platform", session_expiry=3600)
    receiver.start()
    make_key(tmp_path)
    yield tmp_path, platform, Upstream(receiver, tmp_path), started
    receiver.stop()
    for process in reversed(started):
        if isinstance(process, Fleet):
            process.close()
        else:
            stop_all(process)


def write_config(workdir: Path, uplink_port: int, devices: list[dict]) -> Path:
    config = {"gateway": {"id": GATEWAY_ID, "scan_interval": 0.2, "state_dir": str(workdir / "state"),
                          "cache_dir": str(workdir / "cache"), "runtime_dir": str(workdir / "run")},
              "devices": devices,
              "uplink": {"host": "127.0.0.1", "port": uplink_port, "transport": "plain",
                         "signing_key": str(workdir / "signing.key")}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def gas_device(port: int, **settings: Any) -> dict[str, Any]:
    return {"name": "gas", "driver": "mqtt", "host": "127.0.0.1", "port": port, "transport": "plain",
            "subscribe": ["plant/+/gas/+"], "report": "every_read", **settings,
            "tags": [{"name": detector, "topic": f"plant/+/gas/{detector}", "value": "/ch4", "timestamp": "/ts",
                      "timestamp_format": "ms", "quality": "/status", "quality_map": {"ok": "GOOD"}, "unit": "%LEL"}
                     for detector in DETECTORS]}


def readings(samples: dict[str, list], tags: dict[str, str]) -> set[tuple[str, float, int]]:
    """(fleet key, value, source ts ms) of the samples that carry a reading (GOOD or UNCERTAIN)."""
    return {(key, value, source) for tag, key in tags.items() for _, value, quality, source in samples.get(tag, [])
            if quality < Quality.NO_VALUE and quality != Quality.STALE}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def test_fleet_readings_arrive_with_source_times_through_silence_and_a_broker_restart(rig):
    workdir, platform, upstream, started = rig
    sensors = Broker(workdir / "sensors").start()
    started.append(sensors)
    edge = {"name": "edge", "driver": "mqtt", "host": "127.0.0.1", "port": sensors.port, "transport": "plain",
            "payload": "sparkplug_b", "group": "site1", "publish_interval": 0.2, "report": "every_read",
            "tags": [{"name": f"P1.{metric}", "node": "edge1", "device": "pump-1", "metric": metric}
                     for metric in PUMP]}
    config = write_config(workdir, platform.port,
                          [gas_device(sensors.port, publish_interval=0.2, comm_failure_after=1.5), edge])
    daemon = Daemon(workdir, config).start()
    started.append(daemon)
    wait_for(lambda: "device gas (broker" not in daemon.log_text() and "subscribed to plant/+/gas/+"
             in daemon.log_text() and "subscribed to spBv1.0/site1/#" in daemon.log_text(), 60, "daemon subscribed")
    fleet = Fleet(sensors.port, "--period", "0.2", "--sparkplug", "site1/edge1", "--client-id", "fleet")
    started.append(fleet)
    time.sleep(1.5)
    fleet.command("rebirth")  # NDEATH, then births with the aliases of the pump's metrics swapped
    time.sleep(1.0)
    fleet.command("silence GD-003")
    time.sleep(2.5)  # STALE after 0.6 s, COMM_FAILURE after 1.5 s
    restart_at = int(time.time() * 1000)
    sensors.stop()
    time.sleep(1.0)
    sensors = Broker(workdir / "sensors", sensors.port).start()
    started.append(sensors)
    wait_for(lambda: daemon.log_text().count("subscribed to plant/+/gas/+") >= 2, 30, "daemon resubscribed")
    time.sleep(0.5)
    reborn_at = int(time.time() * 1000)
    fleet.command("rebirth")  # the host never asks for a rebirth; after the restart the node is told here
    time.sleep(2.0)
    fleet.command("quiet")
    acked = fleet.acked()
    time.sleep(0.5)
    assert daemon.stop() == 0
    upstream.wait_quiet()
    samples = upstream.samples()

    json_acked = {entry for entry in acked if entry[0] in DETECTORS}
    arrived = readings(samples, {detector: detector for detector in DETECTORS})
    missing = sorted(json_acked - arrived)
    assert not missing, f"{len(missing)} of {len(json_acked)} acknowledged readings lost, e.g. {missing[:3]}"
    assert sum(1 for entry in json_acked if entry[2] > restart_at) > 10, "readings published after the restart"
    assert arrived - json_acked == set(), "nothing upstream that was not published"

    pump_keys = {f"P1.{metric}": f"edge1/pump-1/{metric}" for metric in PUMP}
    pump_acked = {entry for entry in acked if entry[0] in pump_keys.values()
                  and not restart_at <= entry[2] < reborn_at}  # the node's births after the restart were missed
    pump_arrived = readings(samples, pump_keys)
    missing = sorted(pump_acked - pump_arrived)
    assert not missing, f"{len(missing)} of {len(pump_acked)} Sparkplug readings lost, e.g. {missing[:3]}"
    assert len(pump_acked) > 30 and pump_arrived <= {entry for entry in acked if entry[0] in pump_keys.values()}

    silent = [quality for _, _, quality, _ in samples["GD-003"]]
    last_good = max(index for index, quality in enumerate(silent) if quality == Quality.GOOD)
    assert silent[last_good + 1:last_good + 3] == [Quality.STALE, Quality.COMM_FAILURE]
    changes = [(event["kind"], event["source"]) for event in upstream.events("device_down")
               + upstream.events("device_up")]
    assert ("device_down", "gas") in changes and ("device_up", "gas") in changes


def test_a_flood_on_the_uplinks_own_broker_is_bounded_and_reported_as_a_gap(rig):
    workdir, platform, upstream, started = rig
    config = write_config(workdir, platform.port, [gas_device(platform.port, publish_interval=0.1,
                                                              max_messages_per_second=40, queue_limit=30)])
    daemon = Daemon(workdir, config).start()
    started.append(daemon)
    wait_for(lambda: "subscribed to plant/+/gas/+" in daemon.log_text(), 60, "daemon subscribed")
    fleet = Fleet(platform.port, "--period", "0.1", "--detectors", "3", "--client-id", "fleet")
    started.append(fleet)
    time.sleep(1.0)
    fleet.command("rate 10")  # 300 messages a second, ten times what the device decodes
    time.sleep(3.0)
    fleet.command("rate 1")
    fleet.command("quiet")
    acked = fleet.acked()
    fleet.close()

    def accounted() -> bool:  # the queue drained and the last gap report (5 s after the one before) is in
        arrived = readings(upstream.samples(), {detector: detector for detector in DETECTORS})
        dropped = sum(count for gap in upstream.events("gap") for count, _, _ in gap["data"]["tags"].values())
        return len(arrived) + dropped >= len(acked)

    wait_for(accounted, 60, "every acknowledged reading arrived or was reported dropped")
    assert daemon.stop() == 0
    upstream.wait_quiet()
    samples = upstream.samples()
    gaps = [event for event in upstream.events("gap") if event["source"] == "gas"]
    assert gaps, "the flood was reported"
    dropped = defaultdict(int)
    for gap in gaps:
        assert gap["data"]["action"] == "dropped" and gap["data"]["messages"] > 0
        for tag, (count, first, last) in gap["data"]["tags"].items():
            dropped[tag] += count
            assert first <= last
    total = sum(dropped.values())
    arrived_count = len(readings(samples, {detector: detector for detector in DETECTORS}))
    assert total > 0 and arrived_count < len(acked), f"{total} dropped of {len(acked)}"
    arrived = readings(samples, {detector: detector for detector in DETECTORS})
    for detector in DETECTORS:
        published = {entry for entry in acked if entry[0] == detector}
        mine = {entry for entry in arrived if entry[0] == detector}
        assert mine <= published
        assert len(mine) + dropped[detector] == len(published), f"{detector}: each reading arrived or is in a gap"
