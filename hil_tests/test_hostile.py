"""Hostile Modbus peers against the real daemon: fuzzed frames never crash it, never stall the healthy
PLC beside them, and every kind of bad answer turns the peer's tags bad with its own reason.

The peers are `hil_tests/sim/hostile.py` processes answering each request from a seeded random mix of
wrong lengths, wrong transaction ids, unit ids and function codes, exception codes, truncated frames,
random bytes, silence and floods of unsolicited frames. `make test` runs a shortened fuzz; `make soak`
(GATEWAYD_FAULT_SIZE=full, as in test_faults.py) at least 100,000 fuzzed frames. Figures are printed
as one JSON line (`pytest -s` shows them); docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant, committed
from hil_tests.harness import Broker, HostilePeer, Simulator, plant_config, stop_all
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet
from hil_tests.test_service import add_metrics, scrape, wait_for_scrape

FULL = os.environ.get("GATEWAYD_FAULT_SIZE") == "full"
FUZZED_FRAMES = 100_000 if FULL else 5_000
HEALTHY_POLL = 0.2
BAD = {int(Quality.COMM_FAILURE), int(Quality.DEVICE_ERROR), int(Quality.DECODE_ERROR)}
# what each kind of answer must do to the peer's tags; `valid` and `flood` (whose answer survives only
# when the flood is short) are left to the fuzz
EXPECTED = {
    "exception": Quality.DEVICE_ERROR,
    "gateway_exception": Quality.COMM_FAILURE,  # 0x0A/0x0B: the device behind the gateway is unreachable
    "wrong_length": Quality.DECODE_ERROR,
    "bad_byte_count": Quality.DECODE_ERROR,
    "wrong_function": Quality.DECODE_ERROR,
    "wrong_tid": Quality.DECODE_ERROR,  # not an answer to this request: garbage, at once
    "wrong_unit": Quality.DECODE_ERROR,
    "bad_protocol_id": Quality.DECODE_ERROR,
    "truncated": Quality.DECODE_ERROR,  # part of a frame, then nothing: garbage when the timeout ends
    "random_bytes": Quality.DECODE_ERROR,
    "silence": Quality.COMM_FAILURE,  # the only kind that is no answer at all
}
TIMEOUT_EACH_KIND = 0.3
GARBAGE_ONLY = [kind for kind, quality in EXPECTED.items() if quality == Quality.DECODE_ERROR]


def hostile_device(name: str, port: int, tables: tuple[str, ...], timeout: float) -> dict:
    """A fast-polling device on a hostile peer, one block per table, so every function code is asked."""
    shapes = {"holding": ("float32", 0), "input": ("int16", 0), "coil": ("bool", 0), "discrete": ("bool", 3)}
    tags = [{"name": f"{name}.{table}", "table": table, "address": shapes[table][1], "type": shapes[table][0]}
            for table in tables]
    return {"name": name, "driver": "modbus_tcp", "host": "127.0.0.1", "port": port, "poll_interval": 0.02,
            "timeout": timeout, "retries": 0, "backoff_initial": 0.01, "backoff_max": 0.05, "tags": tags}


@pytest.fixture
def hostile_plant(tmp_path: Path):
    """A broker, a receiver, the healthy PLC (100 tags every 200 ms) and hostile peers, one per mix."""
    plants: list[Plant] = []
    peers: dict[str, HostilePeer] = {}

    def build(mixes: dict[str, str | None], tables: tuple[str, ...],
              timeout: float = 0.05) -> tuple[Plant, dict[str, HostilePeer], int]:
        broker = Broker(tmp_path).start()
        plc = Simulator(tmp_path, 100, period=HEALTHY_POLL).start()
        for seed, (name, mix) in enumerate(mixes.items(), start=11):
            peers[name] = HostilePeer(tmp_path, seed, mix).start()
        receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                            session_expiry=3600)
        receiver.start()
        config = plant_config(tmp_path, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=100,
                              poll_interval=HEALTHY_POLL, scan_interval=HEALTHY_POLL,
                              extra_devices=[hostile_device(name, peer.port, tables, timeout)
                                             for name, peer in peers.items()])
        port = add_metrics(config)
        plants.append(Plant(tmp_path, broker, plc, receiver, config))
        return plants[-1], peers, port

    yield build
    for plant in plants:
        plant.receiver.stop()
        stop_all(*plant.processes())
    stop_all(*peers.values())


def fuzzed(peers: dict[str, HostilePeer]) -> int:
    return sum(peer.stats()["frames"] for peer in peers.values())


def events_of(plant: Plant, kind: str) -> list[dict]:
    return [event for batch in plant.report().batches for event in batch.body["events"] if event["kind"] == kind]


def test_fuzzed_frames_never_crash_the_daemon_nor_stall_the_healthy_plc(hostile_plant):
    plant, peers, port = hostile_plant({"fuzz-a": None, "fuzz-b": None},
                                       ("holding", "input", "coil", "discrete"))
    daemon = plant.start_daemon()
    wait_for_scrape(port, daemon)
    healthy = 'gatewayd_device_polls_total{device="tank-plc"}'
    before, started = scrape(port)[healthy], time.monotonic()
    deadline = started + (900 if FULL else 180)
    while fuzzed(peers) < FUZZED_FRAMES:
        assert daemon.running, f"the daemon died under fuzzed frames:\n{daemon.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"only {fuzzed(peers)} fuzzed frames: {[p.stats() for p in peers.values()]}"
        time.sleep(1)
    metrics, elapsed, stopping = scrape(port), time.monotonic() - started, time.time()
    polls = metrics[healthy] - before
    assert daemon.stop() == 0
    wait_quiet(plant)
    stats = [peer.stats() for peer in peers.values()]
    samples, event_count = committed(daemon)
    report = plant.report()
    per_tag = samples_by_tag(plant)
    hostile = Counter(quality for tag, rows in per_tag.items() if tag.startswith("fuzz-") for _, _, quality in rows)
    log = daemon.log_text()
    print(json.dumps({"fault": "hostile_modbus", "size": "full" if FULL else "short",
                      "fuzzed_frames": sum(s["frames"] for s in stats), "requests": sum(s["requests"] for s in stats),
                      "seconds": round(elapsed, 1), "healthy_poll_rate": round(polls * HEALTHY_POLL / elapsed, 3),
                      "hostile_qualities": {Quality(q).name: n for q, n in sorted(hostile.items())},
                      "committed": samples, "received": report.samples, "log_lines": len(log.splitlines())}),
          flush=True)
    assert "Traceback" not in log, log[-3000:]
    assert metrics['gatewayd_device_up{device="tank-plc"}'] == 1
    # the healthy PLC keeps its rate (measured 0.999 and 1.025 on a loaded 2-core machine; docs/reliability.md):
    # a hostile peer costing it one poll in five is a regression
    assert polls >= 0.8 * elapsed / HEALTHY_POLL, f"healthy PLC polled {polls:.0f} times in {elapsed:.0f} s"
    assert not [e for e in events_of(plant, "device_down") if e["source"] == "tank-plc"]
    # until the stop (the stopping daemon's last scan truthfully finds tags unread past stale_after): never
    # bad; a poll late by two intervals on this shared machine may turn a value STALE for a moment
    healthy_qualities = {quality for tag, rows in per_tag.items() if not tag.startswith("fuzz-")
                         for ts, _, quality in rows[1:] if ts / 1000 < stopping}
    assert healthy_qualities <= {Quality.GOOD, Quality.STALE}, healthy_qualities
    assert BAD <= set(hostile), f"every bad reason seen on the hostile tags: {hostile}"
    # STALE: a hostile peer's tag not refreshed for stale_after (three poll intervals) while its polls fail slowly
    assert set(hostile) <= BAD | {Quality.GOOD, Quality.STALE, Quality.OUT_OF_RANGE, Quality.NO_VALUE}, hostile
    assert not events_of(plant, "driver_crashed")
    assert report.ok, report.format()
    assert (report.samples, report.events) == (samples, event_count)


def test_each_kind_of_bad_answer_gives_its_own_quality(hostile_plant):
    # a timeout a busy machine cannot fake: garbage is told on arrival whatever the timeout, silence at its end
    plant, peers, _ = hostile_plant({kind.replace("_", "-"): kind for kind in EXPECTED},
                                    ("holding", "input", "coil", "discrete"), TIMEOUT_EACH_KIND)
    daemon = plant.start_daemon()

    def seen() -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for tag, rows in samples_by_tag(plant).items():
            device = tag.partition(".")[0]
            if device in peers:
                found.setdefault(device, set()).update(quality for _, _, quality in rows
                                                       if quality != Quality.NO_VALUE)
        return found

    deadline = time.monotonic() + 60
    while len(seen()) < len(peers) or any(peer.stats()["requests"] < 20 for peer in peers.values()):
        assert time.monotonic() < deadline, f"not every hostile device reported: {seen()}"
        time.sleep(1)
    assert daemon.stop() == 0
    wait_quiet(plant)
    qualities = seen()
    expected = {kind.replace("_", "-"): {int(quality)} for kind, quality in EXPECTED.items()}
    assert {device: sorted(q) for device, q in qualities.items()} == \
        {device: sorted(q) for device, q in expected.items()}
    assert "Traceback" not in daemon.log_text()
    assert plant.report().ok
    # a device that answers only garbage is down because its answers cannot be decoded, not for silence
    causes = {event["source"]: event["data"]["cause"] for event in events_of(plant, "device_down")}
    for kind in GARBAGE_ONLY:
        assert causes[kind.replace("_", "-")].startswith("undecodable answers"), causes
    assert causes["silence"].endswith(f"no response within {TIMEOUT_EACH_KIND:g} s"), causes
