"""The envelope round-trips exactly, and any damage is detected without any other exception."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from core.types import Event, Priority
from core.batchformat import BatchFormatError, decode_body, parse_envelope, verify_signature
from gatewayd.uplink.batch import build_body, encode_batch
from store import BatchContent, SampleBlock

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()
BOOT = bytes(range(100, 116))


def content() -> BatchContent:
    samples = SampleBlock(
        tag_id=[7, 3, 7, 9],
        ts=[1700000000.0004, 1700000000.25, 1700000001.0, 1700000001.5],
        value=[0.1 + 0.2, -0.0, np.nan, 1e-300],
        quality=[0, 0, 17, 2],
        source_ts=[1699999999.9994, np.nan, np.nan, 1700000001.4],
    )
    events = [
        Event("alarm", 1700000001.0, "PT-102", "PT-102 high", Priority.HIGH,
              {"limit": 10.5, "v": float("inf")}),
        Event("device", 1700000001.2, "plc1", "connection lost"),
    ]
    return BatchContent(samples, {3: "FT-101", 7: "PT-102", 9: "GD-301 (H₂S)"}, events)


def encode(seq: int = 5, prev: bytes = bytes(range(32)), key=KEY, what=None) -> bytes:
    return encode_batch(
        what or content(),
        gateway_id="plant-7/gw-1",
        boot_id=BOOT,
        seq=seq,
        prev_hash=prev,
        created_ms=1700000002000,
        private_key=key,
    )


def forge(body: bytes, *, gid: bytes = b"gw", seq: int = 1, tail: bytes = b"") -> bytes:
    """A correctly signed envelope around any compressed body, to test the body checks."""
    signed = (
        struct.pack(">4sBBH", b"GWB1", 1, 1, len(gid))
        + gid
        + struct.pack(">16sQq32sI", BOOT, seq, 0, bytes(32), len(body))
        + body
    )
    return signed + KEY.sign(signed) + tail


def test_round_trip() -> None:
    data = encode()
    envelope = parse_envelope(data)
    assert envelope.gateway_id == "plant-7/gw-1"
    assert (envelope.boot_id, envelope.seq, envelope.created_ms) == (BOOT, 5, 1700000002000)
    assert envelope.prev_hash == bytes(range(32)) and envelope.raw == data
    assert verify_signature(envelope, PUBLIC)
    body = decode_body(envelope)
    assert body == build_body(content())
    assert body["tags"] == ["FT-101", "PT-102", "GD-301 (H₂S)"]
    assert body["samples"] == {
        "tag": [1, 0, 1, 2],
        "ts": [1700000000000, 1700000000250, 1700000001000, 1700000001500],
        "value": [0.1 + 0.2, -0.0, None, 1e-300],
        "quality": [0, 0, 17, 2],
        "source_ts": [1699999999999, None, None, 1700000001400],
    }
    assert math.copysign(1, body["samples"]["value"][1]) == -1  # even the sign of zero survives
    assert body["events"][0] == {
        "ts": 1700000001000,
        "kind": "alarm",
        "source": "PT-102",
        "priority": 3,
        "message": "PT-102 high",
        "data": {"limit": 10.5, "v": None},
    }


def test_empty_samples_and_events_encode() -> None:
    empty = BatchContent(SampleBlock.empty(), {}, [Event("boot", 1.0, "gw", "started")])
    body = decode_body(parse_envelope(encode(what=empty)))
    assert body["tags"] == [] and body["samples"]["ts"] == [] and len(body["events"]) == 1


def test_another_key_does_not_verify() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    assert not verify_signature(parse_envelope(encode(key=other)), PUBLIC)


def test_encode_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seq"):
        encode(seq=0)
    with pytest.raises(ValueError, match="prev_hash"):
        encode(prev=b"short")


def test_every_single_byte_flip_is_detected() -> None:
    data = encode()
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= mask
            try:
                accepted = verify_signature(parse_envelope(bytes(damaged)), PUBLIC)
            except BatchFormatError:
                accepted = False
            assert not accepted, f"flip 0x{mask:02x} at byte {i} went unnoticed"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:139], "too short"),
        (lambda d: b"GWB2" + d[4:], "wrong magic"),
        (lambda d: d[:4] + b"\x03" + d[5:], "unsupported version"),
        (lambda d: d[:5] + b"\x03" + d[6:], "unknown flags"),
        (lambda d: d[:6] + b"\xff\xff" + d[8:], "gateway id length"),
        (lambda d: d[:6] + b"\x00\x00" + d[8:], "body length|empty gateway"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d[:-1], "runs past the end"),
    ],
)
def test_malformations_are_named(mutate, reason) -> None:
    with pytest.raises(BatchFormatError, match=reason):
        parse_envelope(mutate(encode()))


def test_seq_zero_and_bad_gateway_id_are_rejected() -> None:
    with pytest.raises(BatchFormatError, match="seq 0"):
        parse_envelope(forge(zlib.compress(b"{}"), seq=0))
    with pytest.raises(BatchFormatError, match="UTF-8"):
        parse_envelope(forge(zlib.compress(b"{}"), gid=b"\xff"))


def good_json() -> bytes:
    return json.dumps(build_body(content())).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not zlib", "not zlib"),
        (zlib.compress(good_json())[:-6], "truncated"),
        (zlib.compress(good_json()) + b"x", "trailing bytes"),
        (zlib.compress(b"\xff\xfe"), "not UTF-8 JSON"),
        (zlib.compress(b"[1, 2"), "not UTF-8 JSON"),
        (zlib.compress(b"[" * 100000 + b"]" * 100000), "not UTF-8 JSON"),
        (zlib.compress(good_json().replace(b"1e-300", b"NaN")), "NaN is not allowed"),
        (zlib.compress(b"[]"), "exactly tags, samples, events"),
        (zlib.compress(good_json().replace(b'"tag": [1', b'"tag": [5')), "indexes past"),
        (zlib.compress(good_json().replace(b'"quality": [0', b'"quality": [256')), "quality"),
        (zlib.compress(good_json().replace(b'"quality": [0', b'"quality": [true')), "quality"),
        (zlib.compress(good_json().replace(b'"value": [', b'"value": [1, ')), "differ in length"),
        (zlib.compress(good_json().replace(b'"kind": "alarm"', b'"kind": 1')), r"events\[0\].kind"),
    ],
)
def test_bad_bodies_are_named(body: bytes, reason: str) -> None:
    with pytest.raises(BatchFormatError, match=reason):
        decode_body(parse_envelope(forge(body)))


def test_decompression_bomb_is_refused() -> None:
    bomb = zlib.compress(bytes(33 * 1024 * 1024))  # 33 MiB of zeros in about 33 KiB
    with pytest.raises(BatchFormatError, match="inflates to more than"):
        decode_body(parse_envelope(forge(bomb)))
    with pytest.raises(BatchFormatError, match="inflates to more than 100 bytes"):
        decode_body(parse_envelope(forge(zlib.compress(good_json()))), max_bytes=100)


def open_batch(data: bytes):
    """What a receiver does; only BatchFormatError may escape."""
    envelope = parse_envelope(data)
    return verify_signature(envelope, PUBLIC), decode_body(envelope)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.binary(max_size=300).map(lambda b: b"GWB1\x01\x01" + b))
def test_random_bytes_are_never_accepted(data: bytes) -> None:
    try:
        accepted, _ = open_batch(data)
    except BatchFormatError:
        return
    assert not accepted


VALID = encode()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-3, 3),
    st.binary(max_size=3),
)
def test_mutated_envelopes_are_never_accepted(changes, cut: int, extra: bytes) -> None:
    damaged = bytearray(VALID)
    for at, value in changes:
        damaged[at] = value
    damaged = bytes(damaged[: len(damaged) + cut] if cut < 0 else damaged) + extra
    try:
        accepted, _ = open_batch(damaged)
    except BatchFormatError:
        return
    assert not accepted or damaged == VALID


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {"tags": json_values, "samples": json_values, "events": json_values}
    )
    | json_values
)
def test_decoder_checks_any_json_shape(value) -> None:
    try:
        body = decode_body(parse_envelope(forge(zlib.compress(json.dumps(value).encode()))))
    except BatchFormatError:
        return
    assert set(body) == {"tags", "samples", "events"}


_COLUMN_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [np.nan, -0.0, 5e-324, 1.7976931348623157e308, 1700000000.0005, 1700000000.0015])
_TIMES = st.floats(min_value=-1e12, max_value=1e12) | st.just(np.nan)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), _TIMES, _COLUMN_FLOATS, _TIMES), max_size=40))
def test_sample_columns_are_written_as_value_by_value(rows) -> None:
    """The body's columns, made a whole column at a time, are what one value at a time made: NaN and
    infinity are null, times round to the nearest millisecond (half to even), every float exact."""
    tag_id, ts, value, source_ts = (list(column) for column in zip(*rows)) if rows else ([], [], [], [])
    samples = SampleBlock(tag_id, ts, value, [0] * len(rows), source_ts)
    body = build_body(BatchContent(samples, {t: f"T{t}" for t in range(1, 7)}, []))

    def ms(column):
        return [None if math.isnan(v) else int(v) for v in np.rint(np.asarray(column, dtype=float) * 1000.0).tolist()]

    assert body["samples"]["ts"] == ms(ts)
    assert body["samples"]["source_ts"] == ms(source_ts)
    expected = [v if math.isfinite(v) else None for v in np.asarray(value, dtype=float).tolist()]
    assert [repr(v) for v in body["samples"]["value"]] == [repr(v) for v in expected]
    assert body["tags"] == [f"T{t}" for t in sorted(set(tag_id))]
