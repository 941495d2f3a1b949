"""Protocol 1.1 with the real daemon and a real mosquitto: a wiped database begins a new epoch, `gatewayd keygen
--rotate` and a reload rotate the signing key, and heartbeats name the head; the platform's verifier (and `gatewayd
verify` on the capture) follows each, pinned only to the first key."""

from __future__ import annotations

import hashlib
import signal
import time

from core.batchformat import decode_body, key_id, parse_envelope
from gatewayd.keys import load_private_key, load_public_key
from gatewayd.platform.receiver import Receiver
from gatewayd.platform.verify import ChainVerifier, Kind
from hil_tests.conftest import GATEWAY_ID
from hil_tests.harness import run_cli
from tests.uplinkschemas import problems


def batches(frames: list[bytes]) -> list:
    return [e for e in map(parse_envelope, frames) if not e.is_heartbeat]


def test_a_wiped_database_and_a_key_rotation_are_followed_and_heartbeats_name_the_head(plant_factory):
    plant = plant_factory(tags=5, max_interval=1.0, uplink={"heartbeat": 1.0})
    platform = Receiver("127.0.0.1", plant.broker.port, "gatewayd/+/+", insecure_plain=True,
                        capture_path=plant.workdir / "all.bin", client_id="hil-protocol", session_expiry=3600)
    platform.start()
    key_path = plant.workdir / "signing.key"
    first_pub = plant.workdir / "first.pub"  # what the platform was handed at enrolment
    first_pub.write_bytes(key_path.with_name("signing.key.pub").read_bytes())
    first_key = load_public_key(first_pub)
    try:
        daemon = plant.start_daemon()
        assert platform.wait_for(lambda f: len(batches(f)) >= 3 and len(f) - len(batches(f)) >= 2, 60), \
            daemon.log_text()[-3000:]
        first_epoch = batches(platform.frames())[0].epoch
        assert daemon.stop() == 0
        for path in (plant.workdir / "state").glob("gatewayd.db*"):
            path.unlink()  # the database is lost; the chain marker beside it stays

        daemon = plant.start_daemon()
        assert platform.wait_for(lambda f: any(e.epoch != first_epoch for e in batches(f)), 60), \
            daemon.log_text()[-3000:]
        made = run_cli("keygen", "--rotate", "-c", str(plant.config))
        assert made.returncode == 0 and "next key" in made.stdout, made.stderr
        early = run_cli("keygen", "--rotate", "-c", str(plant.config))  # before the reload: refused, nothing moves
        assert early.returncode == 1 and "not acknowledged yet" in early.stderr
        next_id = key_id(load_private_key(key_path.with_name("signing.key.next")).public_key())
        daemon.signal(signal.SIGHUP)
        assert platform.wait_for(lambda f: any(e.key_id == next_id for e in batches(f)), 60), daemon.log_text()[-3000:]
        finished = run_cli("keygen", "--rotate", "-c", str(plant.config))
        assert finished.returncode == 0, finished.stderr
        assert not key_path.with_name("signing.key.next").exists()
        assert key_id(load_private_key(key_path).public_key()) == next_id
        time.sleep(1.5)  # one more heartbeat, signed by the next key
        assert daemon.stop() == 0
    finally:
        platform.stop()

    frames = platform.frames()
    verifier = ChainVerifier(first_key, gateway_id=GATEWAY_ID)
    for frame in frames:
        verifier.feed(frame)
    report = verifier.report()
    assert report.ok, report.format()
    assert [state.reset_reason for state in report.epochs] == ["new_install", "database_lost"]
    assert report.count(Kind.KEY_ROTATION) == 1 and report.keys[-1] == next_id
    reset = decode_body(batches(frames)[[e.epoch for e in batches(frames)].index(report.epochs[1].epoch)])
    assert reset["events"][0]["data"]["previous_epoch"] == first_epoch.hex()
    digests = {(e.epoch, e.seq): hashlib.sha256(e.raw).digest() for e in batches(frames)}
    beats = [e for e in map(parse_envelope, frames) if e.is_heartbeat]
    assert report.heartbeats == len(beats) >= 4 and beats[-1].key_id == next_id
    named = [(e.epoch, e.seq) for e in beats if e.seq > 0]
    assert named and all(digests[head] == e.prev_hash for head, e in zip(named, [b for b in beats if b.seq > 0]))
    assert {epoch for epoch, _ in named} == {state.epoch for state in report.epochs}
    bodies = [decode_body(e) for e in batches(frames)]
    assert [p for body in bodies for p in problems("batch-1.1.json", body)] == []
    assert [p for e in beats for p in problems("heartbeat-1.1.json", decode_body(e))] == []
    assert {event["kind"] for body in bodies for event in body["events"]} >= \
        {"chain_reset", "key_rotation", "gateway_started", "tag_metadata", "config_reloaded"}

    cli = run_cli("verify", "--public-key", str(first_pub), "--capture", str(plant.workdir / "all.bin"))
    assert cli.returncode == 0 and cli.stdout.startswith("OK:"), cli.stdout + cli.stderr
    assert "chain reset: new epoch, reason database_lost" in cli.stdout and "key rotation" in cli.stdout
