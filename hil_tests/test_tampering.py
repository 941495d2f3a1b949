"""`gatewayd verify` on batches captured from the real daemon, then tampered with as an attacker would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.batchformat import parse_envelope
from gatewayd.platform.capture import read_frames, write_frame
from hil_tests.harness import run_cli


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[list[bytes], Path]:
    """Batches the daemon sent during 10 s of polling, as the platform received them."""
    from hil_tests.conftest import make_plant
    from hil_tests.harness import stop_all

    workdir = tmp_path_factory.mktemp("tamper")
    plant = make_plant(workdir, tags=20, max_interval=1.0)
    try:
        daemon = plant.start_daemon()
        time.sleep(10)
        daemon.stop()
        time.sleep(1)
    finally:
        plant.receiver.stop()
        stop_all(*plant.processes())
    frames = list(read_frames(workdir / "capture.bin"))
    assert len(frames) >= 6
    return frames, workdir / "signing.key.pub"


def verify(frames: list[bytes], public_key: Path, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "capture.bin"
    with open(path, "wb") as fh:
        for frame in frames:
            write_frame(fh, frame)
    result = run_cli("verify", "--public-key", str(public_key), "--capture", str(path))
    return result.returncode, result.stdout + result.stderr


def test_untouched_capture_verifies(captured, tmp_path):
    frames, public_key = captured
    code, output = verify(frames, public_key, tmp_path)
    assert code == 0 and output.startswith("OK:"), output


def flip_byte(frames: list[bytes]) -> list[bytes]:
    victim = bytearray(frames[3])
    victim[len(victim) // 2] ^= 0x01
    return [*frames[:3], bytes(victim), *frames[4:]]


def replay(frames: list[bytes]) -> list[bytes]:
    return [*frames, frames[2]]


def drop(frames: list[bytes]) -> list[bytes]:
    return [*frames[:3], *frames[4:]]


def foreign_key(frames: list[bytes]) -> list[bytes]:
    envelope = parse_envelope(frames[3])
    forged = envelope.signed + Ed25519PrivateKey.generate().sign(envelope.signed)
    return [*frames[:3], forged, *frames[4:]]


@pytest.mark.parametrize("tamper, finding, exit_code", [
    (flip_byte, "seq 4: bad signature", 1),
    (replay, "seq 3: duplicate", 0),
    (drop, "gap: missing seq 4", 1),
    (foreign_key, "seq 4: bad signature", 1),
])
def test_tampering_is_reported(captured, tmp_path, tamper, finding, exit_code):
    frames, public_key = captured
    code, output = verify(tamper(frames), public_key, tmp_path)
    assert finding in output, output
    assert code == exit_code, output
