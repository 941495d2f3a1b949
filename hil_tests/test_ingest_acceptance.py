"""gatewayd-ingest's acceptance rules against a real PostgreSQL: forged, damaged, replayed, reordered, truncated
and undecodable batches are stored or dropped as docs/uplink.md says, and each is recorded as a finding."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import psycopg
import pytest

from hil_tests.ingest_plant import query, run_ingest
from hil_tests.sim.uplink_fleet import SimGateway
from ingest.accept import Acceptor, Message
from ingest.admin import enrol


@pytest.fixture
def accept(ingest_db: str) -> Iterator:
    """accept(topic, payload) -> the Outcome, through a real Acceptor on a fresh database."""
    conn, ddl = psycopg.connect(ingest_db), psycopg.connect(ingest_db)
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


def kinds(outcome) -> list[str]:
    return [finding.kind.label for finding in outcome.findings]


def resigned(gateway: SimGateway, envelope: bytes, body: bytes) -> bytes:
    """`envelope` with another (compressed) body, signed again by the gateway's own key: what a gateway
    with a bug would send (layout: body_len at offset 72 + n, docs/uplink.md#envelope)."""
    n = struct.unpack_from(">H", envelope, 6)[0]
    signed = envelope[:72 + n] + struct.pack(">I", len(body)) + body
    return signed + gateway.key.sign(signed)


def test_dropped_batches_are_recorded_and_store_nothing(accept, gateway: SimGateway, ingest_db: str):
    good = gateway.next_batch(10)
    forger = SimGateway(gateway.gateway_id)  # same id, another key
    forged = forger.next_batch(10)
    tampered = bytearray(good)
    tampered[100] ^= 0x01
    cases = {
        "forged": (gateway.topic, forged, ["bad_signature"]),
        "tampered": (gateway.topic, bytes(tampered), ["bad_signature"]),
        "truncated": (gateway.topic, good[:-10], ["malformed"]),
        "garbage": (gateway.topic, b"GWB1 not a batch", ["malformed"]),
        "undecodable body, signed": (gateway.topic, resigned(gateway, good, b"not zlib"), ["bad_body"]),
        "wrong topic": ("gatewayd/GW-OTHER/batch", good, ["wrong_gateway"]),
        "unknown gateway": (SimGateway("GW-NOBODY").topic, SimGateway("GW-NOBODY").next_batch(5),
                            ["unknown_gateway"]),
    }
    for name, (topic, payload, expected) in cases.items():
        outcome = accept(topic, payload)
        assert not outcome.stored and kinds(outcome) == expected, name
    assert query(ingest_db, "SELECT count(*) FROM samples") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM batches") == [(0,)]
    recorded = query(ingest_db, "SELECT kind, count(*) FROM findings GROUP BY kind ORDER BY kind")
    assert recorded == [("bad_body", 1), ("bad_signature", 2), ("malformed", 2), ("unknown_gateway", 1),
                        ("wrong_gateway", 1)]
    # the genuine batch is still accepted afterwards
    assert accept(gateway.topic, good).stored


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
    assert kinds(accept(gateway.topic, batches[3], late_after=0)) == ["late"]
    assert query(ingest_db, "SELECT first_seq, last_seq FROM gaps") == [(5, 5)]
    assert kinds(accept(gateway.topic, batches[4])) == []
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]
    assert query(ingest_db, "SELECT low_seq, head_seq, batches, samples FROM gateways") == [(1, 6, 6, 60)]
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
