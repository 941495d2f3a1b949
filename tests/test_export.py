"""`gatewayd verify --export`: accepted batches become rows an integrator can query with SQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gatewayd.platform.capture import write_frame
from tests.test_verify import KEY, chain

ROOT = Path(__file__).resolve().parent.parent


def test_verified_batches_are_exported_once_each(tmp_path: Path):
    frames = chain(3)
    capture, public_key, database = tmp_path / "capture.bin", tmp_path / "gw.pub", tmp_path / "received.db"
    with open(capture, "wb") as fh:
        for frame in [*frames, frames[1]]:  # a redelivered batch is exported once
            write_frame(fh, frame)
    public_key.write_bytes(KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    result = subprocess.run([sys.executable, "-m", "gatewayd", "verify", "--public-key", str(public_key),
                             "--capture", str(capture), "--export", str(database)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exported 6 samples and 3 events" in result.stdout
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT seq, count(*) FROM samples GROUP BY seq").fetchall() == [(1, 1), (2, 2), (3, 3)]
        assert db.execute("SELECT DISTINCT gateway, tag FROM samples").fetchall() == [("gw-1", "TT-1")]
        assert db.execute("SELECT value FROM samples WHERE seq = 3 ORDER BY ts_ms").fetchall() == \
            [(0.0,), (0.5,), (1.0,)]
        assert db.execute("SELECT kind, message FROM events WHERE seq = 2").fetchall() == [("note", "batch of 2")]
