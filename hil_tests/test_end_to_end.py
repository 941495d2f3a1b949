"""The whole path with real processes: PLC simulator -> daemon -> mosquitto -> a verifying receiver."""

from __future__ import annotations

import base64
import hashlib
import time
from collections import defaultdict
from pathlib import Path

from core.types import Quality
from gatewayd.platform.verify import Kind
from hil_tests.conftest import Plant, committed
from hil_tests.harness import Simulator


def samples_by_tag(plant: Plant) -> dict[str, list[tuple[int, float | None, int]]]:
    """Every accepted sample as (ts_ms, value, quality), per tag, in the order the batches carried them."""
    result: dict[str, list] = defaultdict(list)
    for batch in plant.report().batches:
        body = batch.body
        columns = body["samples"]
        for index, ts, value, quality in zip(columns["tag"], columns["ts"], columns["value"], columns["quality"]):
            result[body["tags"][index]].append((ts, value, quality))
    return result


def events_of(plant: Plant, kind: str) -> list[dict]:
    return [event for batch in plant.report().batches for event in batch.body["events"] if event["kind"] == kind]


def assert_in_order(samples: dict[str, list]) -> None:
    for tag, rows in samples.items():
        times = [ts for ts, _, _ in rows]
        assert times == sorted(times) and len(set(times)) == len(times), f"{tag} out of order or repeated"


def wait_quiet(plant: Plant, seconds: float = 2.0) -> None:
    """Let the last batches reach the receiver."""
    count = -1
    while count != len(plant.receiver.frames()):
        count = len(plant.receiver.frames())
        time.sleep(seconds)


def documented_fingerprint(public_key: Path) -> str:
    """docs/uplink.md, "Public key": first 16 hex digits of SHA-256 over the last 32 bytes of the PEM's DER."""
    body = "".join(line for line in public_key.read_text().splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)[-32:]).hexdigest()[:16]


def test_steady_state_every_committed_sample_arrives_verified(plant_factory):
    plant = plant_factory(tags=200)
    daemon = plant.start_daemon()
    time.sleep(20)
    assert daemon.stop() == 0
    key = plant.workdir / "signing.key"
    expected = f"signing key {key}: fingerprint {documented_fingerprint(Path(f'{key}.pub'))}"
    assert expected in daemon.log_text(), "the start log names the key's fingerprint as docs/uplink.md says"
    wait_quiet(plant)
    samples, events = committed(daemon)
    report = plant.report()
    assert report.ok, report.format()
    assert report.first_seq == 1 and report.count(Kind.GAP) == 0
    assert (report.samples, report.events) == (samples, events)
    assert plant.store_rows("SELECT count(*) FROM outbox") == [(0,)], "acknowledged rows must be deleted"
    per_tag = samples_by_tag(plant)
    assert len(per_tag) == 200
    assert_in_order(per_tag)
    level = per_tag["LT101"]
    assert all(quality == Quality.GOOD for _, _, quality in level[1:]) and 0 <= level[-1][1] <= 10


def test_broker_outage_loses_and_duplicates_nothing(plant_factory):
    plant = plant_factory(tags=200)
    daemon = plant.start_daemon()
    time.sleep(6)
    plant.broker.stop()
    time.sleep(10)
    plant.restart_broker()
    restarted_ms = time.time() * 1000
    time.sleep(10)
    assert daemon.stop() == 0
    wait_quiet(plant)
    samples, events = committed(daemon)
    report = plant.report()
    assert report.ok, report.format()
    assert (report.samples, report.events) == (samples, events), "after dedup by sequence, exactly once"
    per_tag = samples_by_tag(plant)
    assert_in_order(per_tag)
    outage = [ts for ts, _, _ in per_tag["LT101"] if restarted_ms - 10_000 < ts < restarted_ms]
    assert outage, "samples taken while the broker was down were stored and sent later"
    assert any(ts > restarted_ms + 2000 for ts, _, _ in per_tag["LT101"]), "live data resumed"


def test_daemon_crash_loses_nothing_committed(plant_factory):
    plant = plant_factory(tags=200)
    first = plant.start_daemon()
    time.sleep(8)
    plant.broker.stop()  # let rows pile up unacknowledged, so the crash has something to lose
    time.sleep(4)
    first.kill()
    pending = [(name, round(ts * 1000)) for _, _, name, ts, _, _ in plant.outbox_samples()]
    assert len(pending) > 20
    plant.restart_broker()
    second = plant.start_daemon()
    time.sleep(6)
    assert second.stop() == 0
    wait_quiet(plant)
    report = plant.report()
    assert report.ok, report.format()
    assert len(report.boot_ids) == 2, "the chain continues across the restart under a new boot id"
    arrived = {(tag, ts) for tag, rows in samples_by_tag(plant).items() for ts, _, _ in rows}
    missing = [row for row in pending if row not in arrived]
    assert not missing, f"{len(missing)} committed samples lost, e.g. {missing[:3]}"


def test_plc_loss_turns_tags_bad_and_recovers(plant_factory):
    plant = plant_factory(tags=50)
    daemon = plant.start_daemon()
    time.sleep(4)
    plant.plc.kill()
    lost_ms = time.time() * 1000
    time.sleep(5)
    plant.plc = Simulator(plant.workdir, 50, plant.plc.port).start()
    time.sleep(5)
    assert daemon.stop() == 0
    wait_quiet(plant)
    down, up = events_of(plant, "device_down"), events_of(plant, "device_up")
    assert len(down) == 1 and down[0]["source"] == "tank-plc" and down[0]["ts"] >= lost_ms
    assert len(up) == 1 and up[0]["ts"] > down[0]["ts"]
    level = samples_by_tag(plant)["LT101"]
    bad = [ts for ts, _, quality in level if quality == Quality.COMM_FAILURE]
    assert bad and bad[0] - lost_ms < 2500, "bad quality within about one poll of the loss"
    assert level[-1][2] == Quality.GOOD, "recovered by itself"
