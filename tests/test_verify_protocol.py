"""Protocol 1.1 streams through the verifier: epochs and resets, key rotations, heartbeats, and every way
docs/uplink.md says such a stream is accepted or rejected ("Verifying a stream, step by step")."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from core.batchformat import (
    ZERO_EPOCH,
    ZERO_HASH,
    body_json,
    encode_envelope,
    encode_heartbeat,
    key_id,
    raw_public_key,
)
from gatewayd.platform.verify import ChainVerifier, Kind

KEY_A = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_B = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
THIEF = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
E1, E2, E3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
BOOT = b"B" * 16


def event(kind: str, data: dict) -> dict:
    return {"ts": 1_700_000_000_000, "kind": kind, "source": "gw-1", "priority": 0, "message": kind, "data": data}


def body(events: list[dict]) -> dict:
    return {"tags": ["TT-1"], "samples": {"tag": [0], "ts": [1], "value": [1.5], "quality": [0], "source_ts": [None]},
            "events": events}


def rotation(next_key: Ed25519PrivateKey) -> dict:
    public = next_key.public_key()
    return event("key_rotation", {"next_public_key": raw_public_key(public).hex(), "next_key_id": key_id(public).hex()})


class Gateway:
    """Builds one epoch's chain the way docs/uplink.md describes it, with the shared encoder."""

    def __init__(self, epoch: bytes, key=KEY_A, reason: str = "new_install", previous: tuple | None = None,
                 clock_ms: int = 1_000_000) -> None:
        self.epoch, self.key, self.seq, self.head, self.clock = epoch, key, 0, ZERO_HASH, clock_ms
        epoch_prev, seq_prev, hash_prev = previous or (None, None, None)
        self.reset = event("chain_reset", {"epoch": epoch.hex(), "reason": reason, "previous_epoch": epoch_prev,
                                           "previous_seq": seq_prev, "previous_hash": hash_prev})

    def batch(self, events: list[dict] | None = None, key=None) -> bytes:
        self.seq += 1
        events = list(events or [event("note", {})])
        if self.seq == 1 and self.epoch != ZERO_EPOCH:
            events.insert(0, self.reset)
        self.clock += 1000
        data = encode_envelope(body(events), gateway_id="gw-1", boot_id=BOOT, seq=self.seq, prev_hash=self.head,
                               created_ms=self.clock, private_key=key or self.key, epoch=self.epoch)
        self.head = hashlib.sha256(data).digest()
        return data

    def batches(self, count: int) -> list[bytes]:
        return [self.batch() for _ in range(count)]

    def heartbeat(self, oldest: int | None = None, head: tuple[int, bytes] | None = None) -> bytes:
        self.clock += 1000
        seq, digest = head or (self.seq, self.head)
        return encode_heartbeat(gateway_id="gw-1", epoch=self.epoch, boot_id=BOOT, head_seq=seq, head_hash=digest,
                                created_ms=self.clock, private_key=self.key, interval=60.0,
                                oldest_unacknowledged=oldest)


def run(frames: list[bytes], key=KEY_A):
    verifier = ChainVerifier(key.public_key(), gateway_id="gw-1")
    for frame in frames:
        verifier.feed(frame)
    return verifier.report()


def kinds(report) -> list[Kind]:
    return [f.kind for f in report.findings if f.kind is not Kind.NEW_BOOT]


def test_a_reset_begins_a_new_epoch_that_is_flagged_not_refused():
    first = Gateway(E1)
    old = first.batches(3)
    second = Gateway(E2, reason="database_lost", previous=(E1.hex(), 3, first.head.hex()), clock_ms=first.clock)
    report = run(old + second.batches(2))
    assert report.ok, report.format()
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.CHAIN_RESET]
    assert "reason database_lost" in report.findings[-1].detail
    assert [(s.epoch, s.reset_reason, sorted(s.accepted)) for s in report.epochs] == [
        (E1, "new_install", [1, 2, 3]), (E2, "database_lost", [1, 2])]
    assert (report.first_seq, report.last_seq, report.events) == (1, 2, 5)  # resets are not plant events
    assert "in 2 epochs" in report.format()


def test_a_reset_that_disagrees_with_what_was_received_is_serious():
    first = Gateway(E1)
    old = first.batches(3)
    second = Gateway(E2, reason="restored_backup", previous=(E1.hex(), 3, "00" * 32), clock_ms=first.clock)
    report = run(old + second.batches(1))
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.CHAIN_RESET, Kind.RESET_MISMATCH] and not report.ok


def test_a_replayed_old_reset_is_rejected_and_its_epoch_never_becomes_current():
    ancient = Gateway(E1, clock_ms=0)
    replayed = ancient.batches(2)
    current = Gateway(E2, reason="database_lost", clock_ms=10_000_000)
    report = run(current.batches(3) + replayed)
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.REPLAYED_RESET, Kind.UNANCHORED_EPOCH] and not report.ok
    assert [state.epoch for state in report.epochs] == [E2] and report.last_seq == 3


def test_a_forged_reset_is_a_bad_signature_or_an_unknown_key():
    forger = Gateway(E2, key=THIEF)
    genuine = Gateway(E1)
    frames = genuine.batches(2)
    forged = forger.batch()
    relabelled = bytearray(forged)  # the forger claims key A's id: the signature cannot match
    relabelled[9 + 4 + 16: 9 + 4 + 24] = key_id(KEY_A.public_key())
    report = run(frames + [forged, bytes(relabelled)])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.BAD_SIGNATURE, Kind.UNKNOWN_KEY]
    assert [state.epoch for state in report.epochs] == [E1]


def test_batches_of_a_new_epoch_wait_for_its_reset_and_without_it_are_serious():
    first = Gateway(E1)
    second = Gateway(E2, reason="database_lost", clock_ms=10_000_000)
    old, new = first.batches(2), second.batches(3)
    reordered = run(old + [new[2], new[1], new[0]])
    assert reordered.ok and sorted(reordered.epochs[1].accepted) == [1, 2, 3], reordered.format()
    missing_reset = run(old + new[1:])
    assert kinds(missing_reset) == [Kind.CHAIN_RESET, Kind.UNANCHORED_EPOCH, Kind.UNANCHORED_EPOCH]


def test_a_key_rotation_is_followed_in_any_order_and_the_old_key_retires():
    gateway = Gateway(E1)
    frames = [gateway.batch(), gateway.batch([rotation(KEY_B)]), gateway.batch()]  # still key A until acknowledged
    gateway.key = KEY_B
    frames += gateway.batches(2)
    report = run(frames)
    assert report.ok and kinds(report) == [Kind.CHAIN_RESET, Kind.KEY_ROTATION], report.format()
    assert report.keys == [key_id(KEY_A.public_key()), key_id(KEY_B.public_key())]
    assert [b.key_id for b in report.batches] == [key_id(KEY_A.public_key())] * 3 + [key_id(KEY_B.public_key())] * 2
    backwards = run(frames[::-1])
    assert backwards.ok and backwards.batches_accepted == 5, backwards.format()
    stolen = gateway.batch(key=KEY_A)  # seq 6 signed by the old key after its successor signed seq 4
    assert kinds(run(frames + [stolen]))[-1] is Kind.RETIRED_KEY


def test_a_lost_announcement_leaves_the_new_key_unknown():
    gateway = Gateway(E1)
    frames = [gateway.batch(), gateway.batch([rotation(KEY_B)])]
    gateway.key = KEY_B
    frames += gateway.batches(2)
    report = run([frames[0], *frames[2:]])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.UNKNOWN_KEY, Kind.UNKNOWN_KEY] and not report.ok


def test_a_heartbeat_reveals_loss_at_the_tail_and_says_whether_the_gateway_still_holds_it():
    gateway = Gateway(E1)
    delivered = gateway.batches(3)
    gateway.batches(2)  # built, never received
    holding = run(delivered + [gateway.heartbeat(oldest=4)])
    assert kinds(holding) == [Kind.CHAIN_RESET, Kind.GAP] and holding.heartbeats == 1
    assert holding.findings[-1].detail == "missing seq 4..5 (2 batches)"
    lost = run(delivered + [gateway.heartbeat(oldest=None)])
    assert lost.findings[-1].detail.endswith("the gateway no longer holds them")
    assert run(delivered).ok  # without the heartbeat the tail loss is invisible


def test_a_heartbeat_must_name_the_head_batch_by_its_hash():
    gateway = Gateway(E1)
    frames = gateway.batches(2)
    report = run(frames + [gateway.heartbeat(head=(2, b"\x55" * 32))])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.CHAIN_BREAK]


def test_a_late_receiver_anchors_at_the_first_heartbeat():
    gateway = Gateway(E1)
    gateway.batches(10)  # before the receiver existed
    anchor = gateway.heartbeat()
    report = run([anchor, *gateway.batches(2)])
    assert report.ok and kinds(report) == [Kind.LATE_START], report.format()
    assert sorted(report.epochs[0].accepted) == [11, 12]
    wrong = Gateway(E1)
    wrong.batches(10)
    wrong.head = b"\x66" * 32  # batch 11 does not follow the anchored head
    assert Kind.CHAIN_BREAK in kinds(run([anchor, wrong.batch()]))


def test_stale_heartbeats_are_ignored():
    gateway = Gateway(E1)
    frames = gateway.batches(3)
    early = gateway.heartbeat(head=(2, hashlib.sha256(frames[1]).digest()))
    late = gateway.heartbeat()
    report = run(frames + [late, early])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.STALE_HEARTBEAT] and report.ok
    assert report.epochs[0].head[0] == 3


def sign_raw(key, epoch: bytes, seq: int, prev: bytes, compressed: bytes, kind: int = 1) -> bytes:
    """A 1.1 envelope built from the offsets in docs/uplink.md, not from the encoder, around any body."""
    gid = b"gw-1"
    signed = (b"GWB1" + struct.pack(">BBBH", 2, 1, kind, len(gid)) + gid + epoch + key_id(key.public_key()) + BOOT
              + struct.pack(">Qq", seq, 5_000_000 + seq) + prev + struct.pack(">I", len(compressed)) + compressed)
    return signed + key.sign(signed)


def test_a_signed_batch_whose_body_fails_to_decode_keeps_its_place_in_the_chain():
    gateway = Gateway(E1)
    frames = gateway.batches(2)
    broken = sign_raw(KEY_A, E1, 3, gateway.head, b"not zlib at all")
    gateway.seq, gateway.head = 3, hashlib.sha256(broken).digest()
    after = gateway.batch()
    report = run(frames + [broken, after, broken])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.UNDECODABLE, Kind.DUPLICATE], report.format()
    assert [b.seq for b in report.batches] == [1, 2, 3, 4] and report.batches[2].body is None
    assert report.samples == 3 and not report.ok


def test_control_events_that_break_the_rules_make_a_batch_undecodable():
    gateway = Gateway(E1)
    frames = gateway.batches(1)
    stray = body([gateway.reset])  # a chain_reset at seq 2
    data = sign_raw(KEY_A, E1, 2, gateway.head, zlib.compress(body_json(stray)))
    assert kinds(run(frames + [data])) == [Kind.CHAIN_RESET, Kind.UNDECODABLE]
    bad_id = rotation(KEY_B)
    bad_id["data"]["next_key_id"] = "0" * 16
    data = sign_raw(KEY_A, E1, 2, gateway.head, zlib.compress(body_json(body([bad_id]))))
    report = run(frames + [data])
    assert kinds(report) == [Kind.CHAIN_RESET, Kind.UNDECODABLE] and report.keys == [key_id(KEY_A.public_key())]


def test_truncated_and_unknown_type_payloads_are_malformed():
    frame = Gateway(E1).batch()
    truncated = run([frame[:-1], frame[:170]])
    assert kinds(truncated) == [Kind.MALFORMED, Kind.MALFORMED] and truncated.batches_accepted == 0
    odd = bytearray(frame)
    odd[6] = 3
    assert "unknown type 3" in run([bytes(odd)]).findings[0].detail


def test_a_1_0_receiver_refuses_1_1_at_the_version_byte_and_an_upgrade_continues_the_zero_epoch():
    legacy = Gateway(ZERO_EPOCH)
    frames = []
    for _ in range(2):  # protocol 1.0 batches, as the gateway sent them before the upgrade
        legacy.seq += 1
        frames.append(encode_envelope(body([]), gateway_id="gw-1", boot_id=BOOT, seq=legacy.seq,
                                      prev_hash=legacy.head, created_ms=legacy.seq, private_key=KEY_A))
        legacy.head = hashlib.sha256(frames[-1]).digest()
    upgraded = legacy.batches(2)
    assert [frame[4] for frame in frames + upgraded] == [1, 1, 2, 2]  # 1.0 step 1: "version is 1"
    report = run(frames + upgraded + [legacy.heartbeat()])
    assert report.ok and kinds(report) == [] and [b.seq for b in report.batches] == [1, 2, 3, 4], report.format()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), dup=st.floats(0, 1))
def test_any_order_within_epochs_with_duplicates_accepts_everything_and_finds_nothing_serious(seed, dup):
    """Redelivery, republishing and per-topic ordering shuffle each epoch's batches and heartbeats; epochs come
    in the order they began (an older reset after a newer epoch's batches is a replay, tested above)."""
    rnd = random.Random(seed)
    first = Gateway(E1)
    one = [first.batch(), first.batch([rotation(KEY_B)]), first.batch(), first.heartbeat(oldest=3)]
    first.key = KEY_B
    one += [*first.batches(3), first.heartbeat()]
    second = Gateway(E2, key=KEY_B, reason="database_lost", previous=(E1.hex(), 6, first.head.hex()),
                     clock_ms=first.clock)
    two = [*second.batches(4), second.heartbeat()]
    third = Gateway(E3, key=KEY_B, reason="restored_backup", previous=(E2.hex(), 4, second.head.hex()),
                    clock_ms=second.clock)
    three = [*third.batches(2), third.heartbeat()]
    stream = []
    for segment in (one, two, three):
        segment = segment + [frame for frame in segment if rnd.random() < dup]
        rnd.shuffle(segment)
        stream += segment
    report = run(stream)
    assert report.ok, report.format()
    assert [(s.epoch, sorted(s.accepted)) for s in report.epochs] == [(E1, [1, 2, 3, 4, 5, 6]), (E2, [1, 2, 3, 4]),
                                                                       (E3, [1, 2])]
    assert report.count(Kind.CHAIN_RESET) == 3 and report.count(Kind.KEY_ROTATION) == 1
