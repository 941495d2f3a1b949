"""The chain verifier names each way a stream of batches can go wrong, and passes a good one."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.types import Event
from gatewayd.uplink.batch import encode_batch
from gatewayd.platform.capture import read_frames, write_frame
from gatewayd.platform.verify import ChainVerifier, Kind
from store import BatchContent, SampleBlock, Store

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
BOOT_A, BOOT_B = b"A" * 16, b"B" * 16


def content(n: int) -> BatchContent:
    samples = SampleBlock([1] * n, np.arange(n, dtype=float), np.arange(n) * 0.5, [0] * n, [np.nan] * n)
    return BatchContent(samples, {1: "TT-1"}, [Event("note", 1.0, "gw", f"batch of {n}")])


def chain(count: int, boot: bytes = BOOT_A, key=KEY, start: int = 1, prev: bytes = bytes(32)) -> list[bytes]:
    """`count` correctly chained batches starting at seq `start`."""
    out = []
    for seq in range(start, start + count):
        data = encode_batch(
            content(seq), gateway_id="gw-1", boot_id=boot, seq=seq, prev_hash=prev,
            created_ms=1000 * seq, private_key=key,
        )
        prev = hashlib.sha256(data).digest()
        out.append(data)
    return out


def run(frames: list[bytes], **kwargs):
    verifier = ChainVerifier(KEY.public_key(), **kwargs)
    for frame in frames:
        verifier.feed(frame)
    return verifier.report()


def kinds(report) -> list[Kind]:
    return [f.kind for f in report.findings if f.kind is not Kind.NEW_BOOT]


def test_continuous_chain_is_ok() -> None:
    report = run(chain(5))
    assert report.ok and kinds(report) == []
    assert (report.batches_accepted, report.first_seq, report.last_seq) == (5, 1, 5)
    assert (report.samples, report.events) == (1 + 2 + 3 + 4 + 5, 5)
    assert [b.seq for b in report.batches] == [1, 2, 3, 4, 5]
    assert report.batches[2].body["samples"]["value"] == [0.0, 0.5, 1.0]
    assert report.format().startswith("OK: 5 batches accepted (seq 1..5)")


def test_nothing_received_is_not_ok() -> None:
    report = run([])
    assert not report.ok and "no batches" in report.format()


def test_flipped_byte_is_a_bad_signature() -> None:
    frames = chain(3)
    damaged = bytearray(frames[1])
    damaged[-100] ^= 0x04  # inside the compressed body
    report = run([frames[0], bytes(damaged), frames[2]])
    assert kinds(report) == [Kind.BAD_SIGNATURE, Kind.GAP]
    assert report.findings[1].seq == 2 and not report.ok


def test_garbage_is_malformed() -> None:
    report = run([b"hello", *chain(1)])
    assert kinds(report) == [Kind.MALFORMED] and "too short" in report.findings[0].detail
    assert str(report.findings[0]).startswith("ERROR -: malformed: too short")
    assert not report.ok


def test_replayed_batch_is_a_harmless_duplicate() -> None:
    frames = chain(3)
    report = run(frames + [frames[1]])
    assert kinds(report) == [Kind.DUPLICATE]
    assert report.ok and report.duplicates == 1 and report.batches_accepted == 3


def test_same_seq_with_different_bytes_is_a_conflict() -> None:
    first = chain(2)
    other_boot = chain(2, boot=BOOT_B)  # e.g. the gateway's store was wiped and seq restarted
    report = run(first + other_boot)
    assert kinds(report) == [Kind.CONFLICT, Kind.CONFLICT] and not report.ok
    assert report.batches[0].boot_id == BOOT_A  # the first one stays


def test_dropped_batch_is_a_gap_unless_it_arrives_later() -> None:
    frames = chain(6)
    report = run(frames[:2] + frames[4:])
    assert kinds(report) == [Kind.GAP] and report.findings[-1].detail.startswith("missing seq 3..4")
    assert not report.ok
    filled = run(frames[:2] + frames[4:] + frames[2:4])
    assert kinds(filled) == [Kind.LATE_ARRIVAL, Kind.LATE_ARRIVAL] and filled.ok


def test_batch_signed_with_another_key_is_rejected() -> None:
    frames = chain(3)
    forged = chain(3, key=OTHER)
    report = run([frames[0], forged[1], frames[2]])
    assert kinds(report) == [Kind.BAD_SIGNATURE, Kind.GAP] and report.batches_accepted == 2


def test_reordered_arrival_is_noted_but_ok() -> None:
    frames = chain(4)
    report = run([frames[0], frames[2], frames[1], frames[3]])
    assert kinds(report) == [Kind.LATE_ARRIVAL] and report.findings[-1].seq == 2
    assert report.ok


def test_chain_break_is_found_in_either_arrival_order() -> None:
    head = chain(2)
    # seq 3 claims a predecessor that is not the accepted seq 2
    wrong = chain(1, start=3, prev=hashlib.sha256(b"something else").digest())
    for frames in (head + wrong, wrong + head):
        report = run(frames)
        breaks = [f for f in report.findings if f.kind is Kind.CHAIN_BREAK]
        assert [f.seq for f in breaks] == [3] and not report.ok
    first_not_zero = chain(1, prev=b"\x01" * 32)
    assert kinds(run(first_not_zero)) == [Kind.CHAIN_BREAK]


def test_new_boot_ids_are_listed() -> None:
    first = chain(2)
    after_restart = chain(2, boot=BOOT_B, start=3, prev=hashlib.sha256(first[-1]).digest())
    report = run(first + after_restart)
    assert report.ok and report.boot_ids == [BOOT_A, BOOT_B]
    assert [f.seq for f in report.findings if f.kind is Kind.NEW_BOOT] == [1, 3]


def test_wrong_gateway_is_rejected() -> None:
    report = run(chain(1), gateway_id="gw-2")
    assert kinds(report) == [Kind.WRONG_GATEWAY] and report.batches_accepted == 0


def test_store_to_verifier_end_to_end(tmp_path: Path) -> None:
    """What the store commits arrives intact, even with a restart before acknowledgement."""
    store = Store.open(tmp_path / "g.db")

    def make(content, seq, prev):
        return encode_batch(content, gateway_id="gw-1", boot_id=BOOT_A, seq=seq, prev_hash=prev,
                            created_ms=seq, private_key=KEY)

    published = []
    ids = store.tag_ids(["A", "B"])
    for tick in range(5):
        store.append(SampleBlock(ids, [tick, tick], [1.0, 2.0], [0, 0], [np.nan, tick]), [])
        published.append(store.build_batch(3, make).envelope)
    store.close()
    store = Store.open(tmp_path / "g.db")
    published += [b.envelope for b in store.pending_batches()]  # republished after restart
    store.close()
    report = run(published)
    assert report.ok and report.duplicates == 5 and report.samples == 10
    assert [b.body["samples"]["ts"] for b in report.batches][:2] == [[0, 0], [1000, 1000]]


def test_capture_round_trip_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "capture.bin"
    frames = chain(3)
    with open(path, "wb") as fh:
        for frame in frames:
            write_frame(fh, frame)
        fh.write(struct.pack(">I", 500) + b"only part")
    damage: list[str] = []
    assert list(read_frames(path, on_damage=damage.append)) == frames
    assert len(damage) == 1 and "truncated (9 of 500 bytes)" in damage[0]
    with open(path, "ab") as fh:
        fh.truncate(path.stat().st_size - 11)  # leave 2 bytes of a header
    damage.clear()
    assert list(read_frames(path, on_damage=damage.append)) == frames
    assert "truncated frame header" in damage[0]
