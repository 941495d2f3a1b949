"""The uplink wire format: envelope layout, canonical body JSON, hashing, signing and checking.

Pure code, no I/O, importing nothing of the project: the daemon (gatewayd.uplink.batch builds bodies
from its store), `gatewayd verify` and the platform's ingest service all share exactly this, so a byte
means the same on every side. docs/uplink.md is the reference for platform developers.

Layout (integers big-endian):

    magic "GWB1" | version u8 = 1 | flags u8 (bit0 zlib) | gid_len u16 | gateway_id
    | boot_id 16 | seq u64 | created_ms i64 | prev_hash 32 | body_len u32 | body | signature 64

The signature (Ed25519) covers every byte before it; `prev_hash` is the SHA-256 of the whole
previous envelope, signature included, so each batch vouches for the one before it.
Everything a receiver needs to reject bad input raises `BatchFormatError` and nothing else,
because the receiver reads bytes from the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"GWB1"
VERSION = 1
FLAG_ZLIB = 0x01
ZLIB_LEVEL = 6
MAX_BODY_BYTES = 32 * 1024 * 1024  # decompressed; a 5000-row batch is well under 1 MiB

_HEAD = struct.Struct(">4sBBH")  # magic, version, flags, gid_len
_MIDDLE = struct.Struct(">16sQq32sI")  # boot_id, seq, created_ms, prev_hash, body_len
SIGNATURE_LEN = 64
MIN_LEN = _HEAD.size + _MIDDLE.size + SIGNATURE_LEN  # 140, plus gateway id and body


class BatchFormatError(ValueError):
    """The bytes are not a well-formed version 1 batch; the message says what is wrong."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope. `body` is still compressed; `raw` is the complete envelope."""

    version: int
    flags: int
    gateway_id: str
    boot_id: bytes
    seq: int
    created_ms: int
    prev_hash: bytes
    body: bytes
    signature: bytes
    raw: bytes

    @property
    def signed(self) -> bytes:
        """The bytes the signature covers: all of them but the signature."""
        return self.raw[:-SIGNATURE_LEN]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the complete envelope: the next batch's `prev_hash`."""
        return hashlib.sha256(self.raw).digest()


def body_json(body: dict) -> bytes:
    """Compact UTF-8 JSON; Python writes floats so that they read back exactly."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_envelope(
    body: dict,
    *,
    gateway_id: str,
    boot_id: bytes,
    seq: int,
    prev_hash: bytes,
    created_ms: int,
    private_key: Ed25519PrivateKey,
) -> bytes:
    """Compress and sign one body (plain JSON types, see `body_json`); returns the complete envelope."""
    gid = gateway_id.encode()
    if not 0 < len(gid) <= 0xFFFF:
        raise ValueError("gateway_id must be 1 to 65535 bytes of UTF-8")
    if len(boot_id) != 16 or len(prev_hash) != 32:
        raise ValueError("boot_id must be 16 bytes and prev_hash 32 bytes")
    if not 1 <= seq < 2**64:
        raise ValueError(f"seq {seq} out of range: the first batch is 1")
    compressed = zlib.compress(body_json(body), ZLIB_LEVEL)
    signed = b"".join(
        (
            _HEAD.pack(MAGIC, VERSION, FLAG_ZLIB, len(gid)),
            gid,
            _MIDDLE.pack(boot_id, seq, created_ms, prev_hash, len(compressed)),
            compressed,
        )
    )
    return signed + private_key.sign(signed)


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into its fields, checking every length; does not check the signature."""
    raw = bytes(data)
    if len(raw) < MIN_LEN:
        raise BatchFormatError(f"too short: {len(raw)} bytes, a batch has at least {MIN_LEN}")
    magic, version, flags, gid_len = _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise BatchFormatError(f"wrong magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise BatchFormatError(f"unsupported version {version}, expected {VERSION}")
    if flags != FLAG_ZLIB:
        raise BatchFormatError(f"unknown flags 0x{flags:02x}, version 1 requires 0x01")
    middle_at = _HEAD.size + gid_len
    if len(raw) < middle_at + _MIDDLE.size + SIGNATURE_LEN:
        raise BatchFormatError(f"gateway id length {gid_len} runs past the end")
    try:
        gateway_id = raw[_HEAD.size : middle_at].decode("utf-8")
    except UnicodeDecodeError:
        raise BatchFormatError("gateway id is not valid UTF-8") from None
    if not gateway_id:
        raise BatchFormatError("empty gateway id")
    boot_id, seq, created_ms, prev_hash, body_len = _MIDDLE.unpack_from(raw, middle_at)
    body_at = middle_at + _MIDDLE.size
    expected = body_at + body_len + SIGNATURE_LEN
    if len(raw) < expected:
        raise BatchFormatError(f"body length {body_len} runs past the end")
    if len(raw) > expected:
        raise BatchFormatError(f"{len(raw) - expected} trailing bytes after the signature")
    if seq == 0:
        raise BatchFormatError("seq 0: the first batch is 1")
    return Envelope(
        version=version,
        flags=flags,
        gateway_id=gateway_id,
        boot_id=boot_id,
        seq=seq,
        created_ms=created_ms,
        prev_hash=prev_hash,
        body=raw[body_at : body_at + body_len],
        signature=raw[-SIGNATURE_LEN:],
        raw=raw,
    )


def verify_signature(envelope: Envelope, public_key: Ed25519PublicKey) -> bool:
    """True when the gateway holding the matching private key signed exactly these bytes."""
    try:
        public_key.verify(envelope.signature, envelope.signed)
    except InvalidSignature:
        return False
    return True


def decode_body(envelope: Envelope, max_bytes: int = MAX_BODY_BYTES) -> dict:
    """Decompress (at most `max_bytes`, against zlib bombs), parse and check the body's shape."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(envelope.body, max_bytes + 1)
    except zlib.error as exc:
        raise BatchFormatError(f"body is not zlib data: {exc}") from None
    if len(text) > max_bytes:
        raise BatchFormatError(f"body inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise BatchFormatError("body zlib stream is truncated")
    if inflater.unused_data:
        raise BatchFormatError("trailing bytes after the body's zlib stream")
    try:
        body = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BatchFormatError(f"body is not UTF-8 JSON: {exc}") from None
    _check_body(body)
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a batch body")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


_SAMPLE_COLUMNS = {
    "tag": _is_int,
    "ts": _is_int,
    "value": lambda v: v is None or _is_number(v),
    "quality": lambda v: _is_int(v) and 0 <= v <= 255,
    "source_ts": lambda v: v is None or _is_int(v),
}
_EVENT_FIELDS = {
    "ts": _is_int,
    "kind": lambda v: isinstance(v, str),
    "source": lambda v: isinstance(v, str),
    "priority": _is_int,
    "message": lambda v: isinstance(v, str),
    "data": lambda v: isinstance(v, dict),
}


def _check_body(body: Any) -> None:
    """Raise BatchFormatError unless `body` has exactly the version 1 shape."""
    if not isinstance(body, dict) or set(body) != {"tags", "samples", "events"}:
        raise BatchFormatError("body must be an object with exactly tags, samples, events")
    tags, samples, events = body["tags"], body["samples"], body["events"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BatchFormatError("body.tags must be a list of strings")
    if len(set(tags)) != len(tags):
        raise BatchFormatError("body.tags has repeated names")
    if not isinstance(samples, dict) or set(samples) != set(_SAMPLE_COLUMNS):
        raise BatchFormatError(f"body.samples must have exactly {sorted(_SAMPLE_COLUMNS)}")
    lengths = set()
    for name, valid in _SAMPLE_COLUMNS.items():
        column = samples[name]
        if not isinstance(column, list) or not all(valid(v) for v in column):
            raise BatchFormatError(f"body.samples.{name} has a wrong type or value")
        lengths.add(len(column))
    if len(lengths) > 1:
        raise BatchFormatError("body.samples columns differ in length")
    if not all(t < len(tags) and t >= 0 for t in samples["tag"]):
        raise BatchFormatError("body.samples.tag indexes past body.tags")
    if not isinstance(events, list):
        raise BatchFormatError("body.events must be a list")
    for i, event in enumerate(events):
        if not isinstance(event, dict) or set(event) != set(_EVENT_FIELDS):
            raise BatchFormatError(f"body.events[{i}] must have exactly {sorted(_EVENT_FIELDS)}")
        for name, valid in _EVENT_FIELDS.items():
            if not valid(event[name]):
                raise BatchFormatError(f"body.events[{i}].{name} has a wrong type")
