"""The daemon's side of protocol 1.1: which epoch it continues or begins at start (new install, database lost,
restored backup), the batches its publisher builds for it, and a key rotation across restarts, each checked by
the verifier a platform runs."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.batchformat import ZERO_EPOCH, decode_body, key_id, parse_envelope
from core.types import Event
from gatewayd.config.model import TlsConfig, UplinkConfig
from gatewayd.platform.verify import ChainVerifier, Kind
from gatewayd.uplink.epoch import begin_epoch_if_needed, marker_path, read_marker, write_marker
from gatewayd.uplink.publisher import Publisher
from store import SampleBlock, Store
from store.schema import MIGRATIONS
from tests.uplinkschemas import problems

KEY_A = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_B = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
CONFIG = UplinkConfig(host="broker", port=1883, transport="plain", tls=TlsConfig(), topic_prefix="gatewayd",
                      client_id="gw-1", username=None, password_file=None, signing_key=Path("signing.key"),
                      batch_max_rows=10)


class Site:
    """A gateway's state directory: open its store as the daemon does at start, build batches as its publisher."""

    def __init__(self, directory: Path) -> None:
        self.db = directory / "gatewayd.db"
        self.store: Store | None = None
        self.sent: list[bytes] = []

    def start(self, next_key=None, key=KEY_A) -> str | None:
        self.store = Store.open(self.db)
        reason = begin_epoch_if_needed(self.store, "gw-1")
        self.publisher = Publisher(CONFIG, "gw-1", self.store, key, b"\x07" * 16, next_key)
        return reason

    def send(self, rows: int = 3) -> list[bytes]:
        """Commit `rows` samples and one event, build what is waiting, and heartbeat as the publisher does."""
        ids = self.store.tag_ids(["TT-1"])
        self.store.append(SampleBlock(np.repeat(ids, rows), np.arange(rows) + 1e9, np.arange(rows) * 1.0,
                                      [0] * rows, [np.nan] * rows), [Event("note", 1e9, "gw-1", "row")])
        built = []
        while (batch := self.publisher._build()) is not None:
            built.append(batch.envelope)
        write_marker(marker_path(self.db), self.store.chain_head())
        self.sent += built
        return built

    def acknowledge(self, envelope: bytes) -> None:
        seq = parse_envelope(envelope).seq
        self.store.acknowledge(seq)
        self.publisher.keys.acknowledged(seq)

    def stop(self) -> None:
        self.store.close()


def verify(frames: list[bytes]):
    """The platform's verifier over what the gateway sent; every body also passes docs/schemas/."""
    verifier = ChainVerifier(KEY_A.public_key(), gateway_id="gw-1")
    for frame in frames:
        verifier.feed(frame)
        assert problems("batch-1.1.json", decode_body(parse_envelope(frame))) == []
    return verifier.report()


def first_event(envelope: bytes) -> dict:
    return decode_body(parse_envelope(envelope))["events"][0]


def test_a_new_install_begins_an_epoch_whose_first_batch_says_so(tmp_path):
    site = Site(tmp_path)
    assert site.start() == "new_install"
    first = site.send()[0]
    reset = first_event(first)
    epoch = parse_envelope(first).epoch
    assert reset["kind"] == "chain_reset" and reset["priority"] == 2
    assert reset["data"] == {"epoch": epoch.hex(), "reason": "new_install", "previous_epoch": None,
                             "previous_seq": None, "previous_hash": None}
    assert read_marker(marker_path(site.db)).epoch == epoch != ZERO_EPOCH
    site.stop()
    assert site.start() is None  # a restart continues the chain
    site.send()
    assert [parse_envelope(e).seq for e in site.sent] == [1, 2] and verify(site.sent).ok


def test_a_lost_database_begins_a_new_epoch_naming_the_last_head(tmp_path):
    site = Site(tmp_path)
    site.start()
    site.send()
    site.send()
    before = site.store.chain_head()
    site.stop()
    for path in tmp_path.glob("gatewayd.db*"):
        path.unlink()
    assert site.start() == "database_lost"
    first = site.send()[0]
    data = first_event(first)["data"]
    assert (data["previous_epoch"], data["previous_seq"], data["previous_hash"]) == (
        before.epoch.hex(), 2, before.digest.hex())
    assert parse_envelope(first).seq == 1 and parse_envelope(first).epoch != before.epoch
    report = verify(site.sent)
    assert report.ok and report.count(Kind.CHAIN_RESET) == 2 and len(report.epochs) == 2, report.format()


def test_a_restored_backup_begins_a_new_epoch_and_resends_what_it_still_holds(tmp_path):
    site = Site(tmp_path)
    site.start()
    site.acknowledge(site.send()[0])
    held = site.send()  # built, never acknowledged: the backup still holds these rows
    site.stop()
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in tmp_path.glob("gatewayd.db*"):
        shutil.copy(path, backup / path.name)
    site.start()
    site.send()  # the original goes on (and its marker with it) ...
    site.stop()
    for path in backup.iterdir():  # ... until its database is replaced by the backup
        shutil.copy(path, tmp_path / path.name)
    assert site.start() == "restored_backup"
    resent = site.send(rows=1)
    rows = decode_body(parse_envelope(resent[0]))["samples"]["ts"]
    assert len(rows) == 3 + 1 and first_event(resent[0])["data"]["previous_seq"] == 3
    assert decode_body(parse_envelope(held[0]))["samples"]["ts"] == rows[:3]  # again, in the new epoch
    report = verify(site.sent)
    assert report.ok and [s.reset_reason for s in report.epochs] == ["new_install", "restored_backup"]


def test_a_database_of_protocol_1_0_continues_its_chain_in_the_zero_epoch(tmp_path):
    db = tmp_path / "gatewayd.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, step in MIGRATIONS:
        if name != "0005_epoch":
            step(conn)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    conn.execute("UPDATE chain SET last_seq = 41, last_hash = ?", (b"\x41" * 32,))
    conn.close()
    site = Site(tmp_path)
    assert site.start() is None
    envelope = parse_envelope(site.send()[0])
    assert (envelope.version, envelope.epoch, envelope.seq, envelope.prev_hash) == (2, ZERO_EPOCH, 42, b"\x41" * 32)
    assert [event["kind"] for event in decode_body(envelope)["events"]] == ["note"]


def test_a_key_rotation_is_announced_once_and_switches_on_acknowledgement_across_restarts(tmp_path):
    site = Site(tmp_path)
    site.start()
    site.acknowledge(site.send()[0])
    site.stop()
    site.start(next_key=KEY_B)
    announcing = site.send()[0]
    announcement = decode_body(parse_envelope(announcing))["events"][-1]
    assert announcement["kind"] == "key_rotation"
    assert announcement["data"]["next_key_id"] == key_id(KEY_B.public_key()).hex()
    site.stop()
    site.start(next_key=KEY_B)  # restarted before the broker acknowledged: no second announcement, old key
    waiting = site.send()[0]
    assert [e["kind"] for e in decode_body(parse_envelope(waiting))["events"]] == ["note"]
    assert parse_envelope(waiting).key_id == key_id(KEY_A.public_key())
    site.acknowledge(announcing)
    switched = site.send()[0]
    assert parse_envelope(switched).key_id == key_id(KEY_B.public_key())
    site.stop()
    site.start(next_key=KEY_B)  # the acknowledgement is remembered
    assert parse_envelope(site.send()[0]).key_id == key_id(KEY_B.public_key())
    report = verify(site.sent)
    assert report.ok and report.count(Kind.KEY_ROTATION) == 1, report.format()
    assert [parse_envelope(e).seq for e in site.sent] == [1, 2, 3, 4, 5]
