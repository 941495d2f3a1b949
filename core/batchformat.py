"""The uplink wire format: envelope layout, canonical body JSON, hashing, signing and checking.

Pure code, no I/O, importing nothing of the project: the daemon (gatewayd.uplink.batch builds bodies
from its store), `gatewayd verify` and the platform's ingest service all share exactly this, so a byte
means the same on every side. docs/uplink.md is the reference for platform developers.

Layouts (integers big-endian). Protocol 1.0, envelope version byte 1:

    magic "GWB1" | version u8 = 1 | flags u8 (bit0 zlib) | gid_len u16 | gateway_id
    | boot_id 16 | seq u64 | created_ms i64 | prev_hash 32 | body_len u32 | body | signature 64

Protocol 1.1, envelope version byte 2 (a 1.0 receiver refuses it at the version byte):

    magic "GWB1" | version u8 = 2 | flags u8 (bit0 zlib) | type u8 (1 batch, 2 heartbeat) | gid_len u16
    | gateway_id | epoch 16 | key_id 8 | boot_id 16 | seq u64 | created_ms i64 | prev_hash 32
    | body_len u32 | body | signature 64

The signature (Ed25519) covers every byte before it; `prev_hash` is the SHA-256 of the whole
previous envelope, signature included, so each batch vouches for the one before it. In 1.1 a chain
belongs to an epoch (a new one begins with a signed `chain_reset` at seq 1), `key_id` names the key
that signed (a `key_rotation` event announces the next one), and a heartbeat carries the chain's
head in `seq` and `prev_hash`. Everything a receiver needs to reject bad input raises
`BatchFormatError` and nothing else, because the receiver reads bytes from the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"GWB1"
VERSION_1_0 = 1  # the envelope's version byte for protocol 1.0
VERSION_1_1 = 2  # and for protocol 1.1
VERSION = VERSION_1_1  # what the daemon writes
FLAG_ZLIB = 0x01
TYPE_BATCH, TYPE_HEARTBEAT = 1, 2
ZLIB_LEVEL = 1  # the fastest; the stream is any level's to a receiver (a tenth of the daemon's CPU at 6)
MAX_BODY_BYTES = 32 * 1024 * 1024  # decompressed; a 5000-row batch is well under 1 MiB
ZERO_HASH = bytes(32)
ZERO_EPOCH = bytes(16)  # the epoch of a chain begun under protocol 1.0, and of every 1.0 batch
RESET_REASONS = ("new_install", "database_lost", "restored_backup")
CHAIN_RESET, KEY_ROTATION = "chain_reset", "key_rotation"

_HEAD = struct.Struct(">4sBBH")  # 1.0: magic, version, flags, gid_len
_MIDDLE = struct.Struct(">16sQq32sI")  # 1.0: boot_id, seq, created_ms, prev_hash, body_len
_HEAD_1_1 = struct.Struct(">4sBBBH")  # magic, version, flags, type, gid_len
_MIDDLE_1_1 = struct.Struct(">16s8s16sQq32sI")  # epoch, key_id, boot_id, seq, created_ms, prev_hash, body_len
SIGNATURE_LEN = 64
MIN_LEN = _HEAD.size + _MIDDLE.size + SIGNATURE_LEN  # 140 (1.0), plus gateway id and body
MIN_LEN_1_1 = _HEAD_1_1.size + _MIDDLE_1_1.size + SIGNATURE_LEN  # 165 (1.1), plus gateway id and body
GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # what gatewayd's config accepts as gateway.id


class BatchFormatError(ValueError):
    """The bytes are not a well-formed batch or heartbeat; the message says what is wrong."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope. `body` is still compressed; `raw` is the complete envelope.

    A 1.0 envelope has type TYPE_BATCH, the zero epoch and an empty `key_id`. For a heartbeat, `seq` and
    `prev_hash` are the head of the chain: the last batch built (0 and zeros before the first)."""

    version: int
    flags: int
    type: int
    gateway_id: str
    epoch: bytes
    key_id: bytes
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

    @property
    def is_heartbeat(self) -> bool:
        return self.type == TYPE_HEARTBEAT


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the raw 32-byte public key (its hex is the key's fingerprint)."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:8]


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


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
    epoch: bytes | None = None,
) -> bytes:
    """Compress and sign one batch body (plain JSON types, see `body_json`); returns the complete envelope.

    Without `epoch` a protocol 1.0 envelope (kept for the worked example and 1.0 receivers' tests); with
    it a 1.1 batch of that epoch, naming the signing key by its id."""
    return encode_json_envelope(body_json(body), gateway_id=gateway_id, boot_id=boot_id, seq=seq,
                                prev_hash=prev_hash, created_ms=created_ms, private_key=private_key, epoch=epoch)


def encode_json_envelope(
    body_text: bytes,
    *,
    gateway_id: str,
    boot_id: bytes,
    seq: int,
    prev_hash: bytes,
    created_ms: int,
    private_key: Ed25519PrivateKey,
    epoch: bytes | None = None,
) -> bytes:
    """`encode_envelope` for a body already written as its canonical JSON (`body_json`'s bytes), for an
    encoder that writes them faster than from a dict (the daemon's, gatewayd.uplink.batch)."""
    if not 1 <= seq < 2**64:
        raise ValueError(f"seq {seq} out of range: the first batch is 1")
    return _encode(TYPE_BATCH, body_text, gateway_id, epoch, boot_id, seq, prev_hash, created_ms, private_key)


def heartbeat_body(interval: float, oldest_unacknowledged: int | None) -> dict:
    """A heartbeat's body: its period in seconds, and the oldest batch still awaiting the broker's PUBACK."""
    return {"interval": interval, "oldest_unacknowledged": oldest_unacknowledged}


def encode_heartbeat(
    *,
    gateway_id: str,
    epoch: bytes,
    boot_id: bytes,
    head_seq: int,
    head_hash: bytes,
    created_ms: int,
    private_key: Ed25519PrivateKey,
    interval: float,
    oldest_unacknowledged: int | None,
) -> bytes:
    """A signed 1.1 heartbeat naming the head of the chain (seq 0 and zero hash before the first batch)."""
    if not 0 <= head_seq < 2**64:
        raise ValueError(f"head seq {head_seq} out of range")
    return _encode(TYPE_HEARTBEAT, body_json(heartbeat_body(interval, oldest_unacknowledged)), gateway_id, epoch,
                   boot_id, head_seq, head_hash, created_ms, private_key)


def _encode(kind: int, body_text: bytes, gateway_id: str, epoch: bytes | None, boot_id: bytes, seq: int,
            prev_hash: bytes, created_ms: int, private_key: Ed25519PrivateKey) -> bytes:
    gid = gateway_id.encode()
    if not 0 < len(gid) <= 0xFFFF:
        raise ValueError("gateway_id must be 1 to 65535 bytes of UTF-8")
    if len(boot_id) != 16 or len(prev_hash) != 32 or (epoch is not None and len(epoch) != 16):
        raise ValueError("boot_id and epoch must be 16 bytes and prev_hash 32 bytes")
    compressed = zlib.compress(body_text, ZLIB_LEVEL)
    if epoch is None:
        head = _HEAD.pack(MAGIC, VERSION_1_0, FLAG_ZLIB, len(gid))
        middle = _MIDDLE.pack(boot_id, seq, created_ms, prev_hash, len(compressed))
    else:
        head = _HEAD_1_1.pack(MAGIC, VERSION_1_1, FLAG_ZLIB, kind, len(gid))
        middle = _MIDDLE_1_1.pack(epoch, key_id(private_key.public_key()), boot_id, seq, created_ms, prev_hash,
                                  len(compressed))
    signed = b"".join((head, gid, middle, compressed))
    return signed + private_key.sign(signed)


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope (1.0 or 1.1) into its fields, checking every length; does not check the signature."""
    raw = bytes(data)
    if len(raw) < MIN_LEN:
        raise BatchFormatError(f"too short: {len(raw)} bytes, a batch has at least {MIN_LEN}")
    magic, version, flags = raw[:4], raw[4], raw[5]
    if magic != MAGIC:
        raise BatchFormatError(f"wrong magic {magic!r}, expected {MAGIC!r}")
    if version not in (VERSION_1_0, VERSION_1_1):
        raise BatchFormatError(f"unsupported version {version}, expected {VERSION_1_0} or {VERSION_1_1}")
    if flags != FLAG_ZLIB:
        raise BatchFormatError(f"unknown flags 0x{flags:02x}, versions 1 and 2 require 0x01")
    if version == VERSION_1_0:
        _, _, _, gid_len = _HEAD.unpack_from(raw)
        kind, head, middle, least = TYPE_BATCH, _HEAD, _MIDDLE, MIN_LEN
    else:
        if len(raw) < MIN_LEN_1_1:
            raise BatchFormatError(f"too short: {len(raw)} bytes, a 1.1 envelope has at least {MIN_LEN_1_1}")
        _, _, _, kind, gid_len = _HEAD_1_1.unpack_from(raw)
        if kind not in (TYPE_BATCH, TYPE_HEARTBEAT):
            raise BatchFormatError(f"unknown type {kind}: 1 is a batch, 2 a heartbeat")
        head, middle, least = _HEAD_1_1, _MIDDLE_1_1, MIN_LEN_1_1
    middle_at = head.size + gid_len
    if len(raw) < least + gid_len:
        raise BatchFormatError(f"gateway id length {gid_len} runs past the end")
    try:
        gateway_id = raw[head.size : middle_at].decode("utf-8")
    except UnicodeDecodeError:
        raise BatchFormatError("gateway id is not valid UTF-8") from None
    if not gateway_id:
        raise BatchFormatError("empty gateway id")
    if version == VERSION_1_0:
        epoch, key = ZERO_EPOCH, b""
        boot_id, seq, created_ms, prev_hash, body_len = middle.unpack_from(raw, middle_at)
    else:
        epoch, key, boot_id, seq, created_ms, prev_hash, body_len = middle.unpack_from(raw, middle_at)
    body_at = middle_at + middle.size
    expected = body_at + body_len + SIGNATURE_LEN
    if len(raw) < expected:
        raise BatchFormatError(f"body length {body_len} runs past the end")
    if len(raw) > expected:
        raise BatchFormatError(f"{len(raw) - expected} trailing bytes after the signature")
    if seq == 0 and kind == TYPE_BATCH:
        raise BatchFormatError("seq 0: the first batch is 1")
    return Envelope(
        version=version,
        flags=flags,
        type=kind,
        gateway_id=gateway_id,
        epoch=epoch,
        key_id=key,
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
    """Decompress (at most `max_bytes`, against zlib bombs), parse and check the body's shape.

    For a 1.1 batch also the control events: a `chain_reset` is the first event of seq 1 and nowhere
    else, seq 1 of any epoch but the zero one begins with one, and both control kinds' data is exact."""
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
    if envelope.is_heartbeat:
        _check_heartbeat(body)
        return body
    _check_body(body)
    if envelope.version == VERSION_1_1:
        _check_control_events(envelope, body["events"])
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


def _is_hex(length: int) -> Any:
    return lambda v: isinstance(v, str) and len(v) == length and re.fullmatch(r"[0-9a-f]*", v) is not None


def _or_none(valid: Any) -> Any:
    return lambda v: v is None or valid(v)


_CONTROL_DATA = {
    CHAIN_RESET: {
        "epoch": _is_hex(32),
        "reason": lambda v: v in RESET_REASONS,
        "previous_epoch": _or_none(_is_hex(32)),
        "previous_seq": _or_none(lambda v: _is_int(v) and v >= 0),
        "previous_hash": _or_none(_is_hex(64)),
    },
    KEY_ROTATION: {
        "next_public_key": _is_hex(64),
        "next_key_id": _is_hex(16),
    },
}
_HEARTBEAT_FIELDS = {
    "interval": lambda v: _is_number(v) and v > 0,
    "oldest_unacknowledged": _or_none(lambda v: _is_int(v) and v >= 1),
}


def _check_exact(what: str, value: Any, fields: dict) -> None:
    if not isinstance(value, dict) or set(value) != set(fields):
        raise BatchFormatError(f"{what} must be an object with exactly {sorted(fields)}")
    for name, valid in fields.items():
        if not valid(value[name]):
            raise BatchFormatError(f"{what}.{name} has a wrong type or value: {value[name]!r}")


def _check_control_events(envelope: Envelope, events: list[dict]) -> None:
    """The rules a receiver acts on, so a signed batch that breaks them is refused as a whole."""
    resets = [i for i, event in enumerate(events) if event["kind"] == CHAIN_RESET]
    begins_epoch = envelope.seq == 1 and envelope.epoch != ZERO_EPOCH
    if begins_epoch and resets != [0]:
        raise BatchFormatError("seq 1 of an epoch must begin with exactly one chain_reset event")
    if not begins_epoch and resets:
        raise BatchFormatError("a chain_reset event outside the first event of seq 1 of a non-zero epoch")
    for i, event in enumerate(events):
        fields = _CONTROL_DATA.get(event["kind"])
        if fields is not None:
            _check_exact(f"body.events[{i}].data", event["data"], fields)
    if begins_epoch and events[0]["data"]["epoch"] != envelope.epoch.hex():
        raise BatchFormatError("the chain_reset names another epoch than its envelope")
    for i, event in enumerate(events):
        if event["kind"] == KEY_ROTATION:
            data = event["data"]
            if hashlib.sha256(bytes.fromhex(data["next_public_key"])).hexdigest()[:16] != data["next_key_id"]:
                raise BatchFormatError(f"body.events[{i}]: next_key_id is not the id of next_public_key")


def _check_heartbeat(body: Any) -> None:
    _check_exact("heartbeat body", body, _HEARTBEAT_FIELDS)
