"""gatewayd-ingest's acceptance rules against a real PostgreSQL: forged, damaged, replayed, reordered, truncated
and undecodable batches are stored or dropped as docs/uplink.md says, and each is recorded as a finding."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator

import psycopg
import pytest

from hil_tests.ingest_plant import query, run_ingest
from core.batchformat import ZERO_EPOCH, encode_envelope
from hil_tests.sim.uplink_fleet import SimGateway
from ingest.accept import Acceptor, Message
from ingest.admin import enrol


@pytest.fixture
def accept(ingest_db: str) -> Iterator:
    """accept(topic, payload) -> the Outcome, through a real Acceptor on a fresh database."""
    conn, ddl = psycopg.connect(ingest_db), psycopg.connect(ingest_db, autocommit=True)
    acceptor = Acceptor(conn, ddl, "test", late_after=3600)

    def run(topic: str, payload: bytes, late_after: float = 3600):
        acceptor.late_after = late_after
        [outcome] = acceptor.process([Message(topic, payload)])
        return outcome

    yield run
    acceptor.close()


@pytest.fixture
def gateway(ingest_db: str) -> SimGateway:
    gw = SimGateway("GW-ACCEPT")
    with psycopg.connect(ingest_db, autocommit=True) as conn:
        enrol(conn, gw.gateway_id, gw.public_key)
    return gw


@contextlib.contextmanager
def sweeper(conninfo: str) -> Iterator[Acceptor]:
    acceptor = Acceptor(psycopg.connect(conninfo), psycopg.connect(conninfo, autocommit=True), "sweeper")
    try:
        yield acceptor
    finally:
        acceptor.close()


def kinds(outcome) -> list[str]:
    return [finding.kind.label for finding in outcome.findings]


def resigned(gateway: SimGateway, envelope: bytes, body: bytes) -> bytes:
    """A 1.1 `envelope` with another (compressed) body, signed again by the gateway's own key: what a
    gateway with a bug would send (layout: body_len at offset 97 + n, docs/uplink.md#envelope)."""
    n = struct.unpack_from(">H", envelope, 7)[0]
    signed = envelope[:97 + n] + struct.pack(">I", len(body)) + body
    return signed + gateway.key.sign(signed)


def test_dropped_and_held_batches_are_recorded_and_store_nothing(accept, gateway: SimGateway, ingest_db: str):
    good = gateway.next_batch(10)
    forger = SimGateway(gateway.gateway_id)  # same id, another key
    tampered = bytearray(good)
    tampered[120] ^= 0x01
    cases = {
        "forged with its own key": (gateway.topic, forger.next_batch(10), ["unknown_key"]),
        "forged, naming the pinned key": (gateway.topic, good[:-64] + forger.key.sign(good[:-64]),
                                          ["bad_signature"]),
        "tampered": (gateway.topic, bytes(tampered), ["bad_signature"]),
        "truncated": (gateway.topic, good[:-10], ["malformed"]),
        "garbage": (gateway.topic, b"GWB1 not a batch", ["malformed"]),
        "wrong topic": ("gatewayd/GW-OTHER/batch", good, ["wrong_gateway"]),
        "unknown gateway": (SimGateway("GW-NOBODY").topic, SimGateway("GW-NOBODY").next_batch(5),
                            ["unknown_gateway"]),
    }
    for name, (topic, payload, expected) in cases.items():
        outcome = accept(topic, payload)
        assert not outcome.stored and kinds(outcome) == expected, name
    assert query(ingest_db, "SELECT count(*) FROM samples") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM batches") == [(0,)]
    assert query(ingest_db, "SELECT reason, seq FROM held") == [("unknown_key", 1)]
    recorded = query(ingest_db, "SELECT kind, serious, count(*) FROM findings GROUP BY 1, 2 ORDER BY 1")
    assert recorded == [("bad_signature", True, 2), ("malformed", True, 2), ("unknown_gateway", True, 1),
                        ("unknown_key", False, 1), ("wrong_gateway", True, 1)]
    # the genuine batch is still accepted afterwards
    assert accept(gateway.topic, good).stored


def test_an_undecodable_signed_batch_is_in_the_chain_without_content(accept, gateway: SimGateway, ingest_db: str):
    bad = resigned(gateway, gateway.next_batch(10), b"not zlib")
    gateway.prev_hash = hashlib.sha256(bad).digest()  # the gateway chained what it sent
    outcome = accept(gateway.topic, bad)
    assert outcome.stored and outcome.samples == 0 and kinds(outcome) == ["undecodable"]
    assert accept(gateway.topic, bad).duplicate
    after = accept(gateway.topic, gateway.next_batch(10))
    assert after.stored and kinds(after) == []  # chained to it, no gap
    assert query(ingest_db, "SELECT seq, undecodable, samples FROM batches ORDER BY seq") == [
        (1, True, 0), (2, False, 10)]
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]


def test_protocol_1_0_batches_are_the_zero_epoch_signed_by_the_enrolled_key(accept, ingest_db: str):
    gateway = SimGateway("GW-OLD", epoch=None)
    with psycopg.connect(ingest_db, autocommit=True) as conn:
        enrol(conn, gateway.gateway_id, gateway.public_key)
    for _ in range(3):
        assert kinds(accept(gateway.topic, gateway.next_batch(10))) == []
    assert query(ingest_db, "SELECT epoch, low_seq, head_seq FROM epochs") == [(ZERO_EPOCH, 1, 3)]


def test_replays_duplicates_and_conflicts(accept, gateway: SimGateway, ingest_db: str):
    first = gateway.next_batch(10)
    assert accept(gateway.topic, first).stored
    again = accept(gateway.topic, first)
    assert again.duplicate and not again.stored and again.findings == []
    # a different batch claiming seq 1: a wiped gateway starting over, or a replay by someone with the key
    impostor = SimGateway(gateway.gateway_id, key=gateway.key)
    conflict = accept(gateway.topic, impostor.next_batch(10))
    assert not conflict.stored and kinds(conflict) == ["conflict"]
    assert query(ingest_db, "SELECT count(*) FROM samples") == [(10,)]
    assert query(ingest_db, "SELECT duplicates, batches FROM gateways") == [(1, 1)]


def test_reordered_batches_open_and_close_gaps(accept, gateway: SimGateway, ingest_db: str):
    batches = [gateway.next_batch(10) for _ in range(6)]
    for index in (0, 2, 5):  # seq 1, 3, 6
        assert accept(gateway.topic, batches[index]).stored
    assert query(ingest_db, "SELECT first_seq, last_seq FROM gaps ORDER BY 1") == [(2, 2), (4, 5)]
    assert "seq 4..5 (2 batches)" in run_ingest(ingest_db, "gaps", gateway.gateway_id)
    assert kinds(accept(gateway.topic, batches[1])) == []  # filled within the late threshold: no finding
    assert kinds(accept(gateway.topic, batches[3], late_after=0)) == ["late_arrival"]
    assert query(ingest_db, "SELECT first_seq, last_seq FROM gaps") == [(5, 5)]
    assert kinds(accept(gateway.topic, batches[4])) == []
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]
    assert query(ingest_db, "SELECT low_seq, head_seq FROM epochs") == [(1, 6)]
    assert query(ingest_db, "SELECT batches, samples FROM gateways") == [(6, 60)]
    assert query(ingest_db, "SELECT count(*) FROM findings WHERE serious") == [(0,)]


def test_chain_break_is_stored_and_flagged_from_either_side(accept, gateway: SimGateway, ingest_db: str):
    one, two = gateway.next_batch(10), gateway.next_batch(10)
    gateway.prev_hash = bytes(range(32))  # seq 3 names a predecessor that is not seq 2
    three = gateway.next_batch(10)
    assert accept(gateway.topic, one).stored
    assert accept(gateway.topic, three).stored
    broken = accept(gateway.topic, two)  # arrives last: the break is seen from seq 2's side
    assert broken.stored and kinds(broken) == ["chain_break"]
    assert "seq 3 names" in broken.findings[0].detail


def test_a_new_boot_is_noted(accept, gateway: SimGateway):
    assert kinds(accept(gateway.topic, gateway.next_batch(5))) == []
    gateway.restart()
    assert kinds(accept(gateway.topic, gateway.next_batch(5))) == ["new_boot"]


def test_key_rotation_pins_the_next_key_and_releases_what_waited_for_it(accept, gateway: SimGateway,
                                                                       ingest_db: str):
    assert accept(gateway.topic, gateway.next_batch(10)).stored
    old_key = gateway.key
    gateway.rotate()
    announcing = gateway.next_batch(10)  # signed by the old key, announces the new one
    signed_by_new = gateway.next_batch(10)
    early = accept(gateway.topic, signed_by_new)  # overtook the announcement: held
    assert early.held and kinds(early) == ["unknown_key"]
    rotation = accept(gateway.topic, announcing)
    assert rotation.stored and kinds(rotation) == ["key_rotation"]
    assert rotation.samples == 20  # its own and the released batch's
    assert query(ingest_db, "SELECT count(*) FROM held") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM gateway_keys") == [(2,)]
    # a stolen old key cannot extend the chain once its successor signed a lower seq
    stolen = encode_envelope(gateway.body(10), gateway_id=gateway.gateway_id, boot_id=gateway.boot_id, seq=4,
                             prev_hash=gateway.prev_hash, created_ms=gateway.clock_ms, private_key=old_key,
                             epoch=gateway.epoch)
    retired = accept(gateway.topic, stolen)
    assert not retired.stored and kinds(retired) == ["retired_key"]
    assert accept(gateway.topic, gateway.next_batch(10)).stored  # the gateway's own seq 4
    assert query(ingest_db, "SELECT count(*), max(seq) FROM batches") == [(4, 4)]


def test_chain_reset_begins_an_epoch_and_a_replayed_one_is_refused(accept, gateway: SimGateway, ingest_db: str):
    for _ in range(3):
        assert accept(gateway.topic, gateway.next_batch(10)).stored
    gateway.reset("database_lost")
    first, second = gateway.next_batch(10), gateway.next_batch(10)
    waiting = accept(gateway.topic, second)  # its epoch has not begun here yet
    assert waiting.held and kinds(waiting) == ["unanchored_epoch"]
    reset = accept(gateway.topic, first)
    assert reset.stored and kinds(reset) == ["chain_reset"] and "database_lost" in reset.findings[0].detail
    assert reset.samples == 20
    middle_epoch = gateway.epoch
    gateway.reset("restored_backup")
    skipped = gateway.next_batch(10)  # seq 1 of the second reset's epoch: never delivered before the third
    gateway.reset("new_install")
    assert kinds(accept(gateway.topic, gateway.next_batch(10))) == ["chain_reset"]
    assert accept(gateway.topic, gateway.next_batch(10)).stored
    replayed = accept(gateway.topic, skipped)  # older than what the current epoch already holds
    assert not replayed.stored and kinds(replayed) == ["replayed_reset"]
    current = query(ingest_db, "SELECT current_epoch FROM gateways")[0][0]
    assert current == gateway.epoch != middle_epoch
    assert query(ingest_db, "SELECT count(*) FROM epochs") == [(3,)]
    # an old epoch's batch still arriving is accepted into that epoch, which stays not current
    assert query(ingest_db, "SELECT count(*) FROM samples") == [(70,)]


def test_a_reset_that_disagrees_with_the_past_is_flagged(accept, gateway: SimGateway):
    for _ in range(2):
        accept(gateway.topic, gateway.next_batch(10))
    gateway.reset("restored_backup")
    gateway.control[0]["data"]["previous_hash"] = "00" * 32  # not the hash of seq 2 as accepted here
    outcome = accept(gateway.topic, gateway.next_batch(10))
    assert outcome.stored and sorted(kinds(outcome)) == ["chain_reset", "reset_mismatch"]


def test_heartbeats_anchor_a_late_start_and_show_loss_at_the_tail(accept, gateway: SimGateway, ingest_db: str):
    for _ in range(5):
        gateway.next_batch(10)  # sent before this receiver existed
    anchor = accept(gateway.heartbeat_topic, gateway.heartbeat())
    assert anchor.heartbeat and kinds(anchor) == ["anchor"]
    assert kinds(accept(gateway.topic, gateway.next_batch(10))) == []  # seq 6 chains to the anchor
    gateway.next_batch(10)  # seq 7 never arrives
    assert accept(gateway.topic, gateway.next_batch(10)).stored  # seq 8
    gateway.next_batch(10)  # seq 9: only the heartbeat tells of it
    beat = gateway.heartbeat(oldest_unacknowledged=None)  # the broker acknowledged everything
    assert kinds(accept(gateway.topic, beat)) == []
    assert query(ingest_db, "SELECT first_seq, last_seq, lost FROM gaps ORDER BY 1") == [(7, 7, True), (9, 9, True)]
    assert kinds(accept(gateway.heartbeat_topic, beat)) == ["stale_heartbeat"]
    broken = accept(gateway.topic, gateway.heartbeat())
    assert kinds(broken) == []
    assert query(ingest_db, "SELECT low_seq, head_seq, top_seq, anchor_seq FROM epochs") == [(6, 8, 9, 5)]
    with sweeper(ingest_db) as acceptor:
        assert [(f.kind.label, f.seq) for f in acceptor.alert_overdue_gaps(3600, 0)] == [("lost", 7), ("lost", 9)]


def test_seq_1_after_the_heartbeat_that_began_its_epoch_still_says_why_it_began(accept, gateway: SimGateway,
                                                                              ingest_db: str):
    """A fresh gateway's first heartbeat may arrive before its seq 1 (two topics the broker does not order
    between them): the heartbeat begins the epoch, seq 1's chain_reset then records why, once."""
    gateway.reset("new_install")
    assert kinds(accept(gateway.heartbeat_topic, gateway.heartbeat())) == ["anchor"]
    first = gateway.next_batch(10)
    assert kinds(accept(gateway.topic, first)) == ["chain_reset"]
    assert accept(gateway.topic, first).duplicate
    assert query(ingest_db, "SELECT reset_reason, low_seq, head_seq FROM epochs") == [("new_install", 1, 1)]
    assert query(ingest_db, "SELECT count(*) FROM findings WHERE kind = 'chain_reset'") == [(1,)]


def test_gaps_open_too_long_are_alerted_once(accept, gateway: SimGateway, ingest_db: str):
    accept(gateway.topic, gateway.next_batch(10))
    gateway.next_batch(10)
    accept(gateway.topic, gateway.next_batch(10))
    with sweeper(ingest_db) as acceptor:
        assert acceptor.alert_overdue_gaps(3600, 0) == []  # not lost, not overdue yet
        [finding] = acceptor.alert_overdue_gaps(0, 0)
        assert finding.kind.label == "gap" and finding.seq == 2
        assert acceptor.alert_overdue_gaps(0, 0) == []
    assert "ALERTED" in run_ingest(ingest_db, "gaps")
