"""What the operator of the platform does by hand: enrol a gateway (pin its key), list open gaps, show a
gateway's chain state. Library functions; ingest.cli prints them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key


class AdminError(Exception):
    """A request the database state does not allow; the message says why."""


def raw_public_key(pem_path: Path) -> bytes:
    """The raw 32-byte Ed25519 key of a `<key>.pub` PEM file (docs/uplink.md#public-key)."""
    try:
        key = load_pem_public_key(pem_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AdminError(f"{pem_path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AdminError(f"{pem_path}: not an Ed25519 public key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(raw: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw key, as `gatewayd keygen` prints it."""
    return hashlib.sha256(raw).hexdigest()[:16]


def enrol(conn: psycopg.Connection, gateway_id: str, raw_key: bytes, replace: bool = False) -> str:
    """Pin `raw_key` for `gateway_id`; a different key already pinned is kept unless `replace`.
    Returns "enrolled", "unchanged" or "replaced"."""
    with conn.transaction():
        row = conn.execute("SELECT public_key FROM gateways WHERE gateway_id = %s FOR UPDATE",
                           (gateway_id,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO gateways (gateway_id, public_key) VALUES (%s, %s)", (gateway_id, raw_key))
            return "enrolled"
        if bytes(row[0]) == raw_key:
            return "unchanged"
        if not replace:
            raise AdminError(f"{gateway_id} is enrolled with key {fingerprint(bytes(row[0]))}, not "
                             f"{fingerprint(raw_key)}: pass --replace to pin the new key by hand")
        conn.execute("UPDATE gateways SET public_key = %s WHERE gateway_id = %s", (raw_key, gateway_id))
        return "replaced"


@dataclass(frozen=True)
class Gap:
    gateway_id: str
    epoch: int
    first_seq: int
    last_seq: int
    opened_at: datetime

    def format(self) -> str:
        span = str(self.first_seq) if self.first_seq == self.last_seq else f"{self.first_seq}..{self.last_seq}"
        return (f"{self.gateway_id} epoch {self.epoch}: seq {span} ({self.last_seq - self.first_seq + 1} batches) "
                f"open since {self.opened_at.isoformat(timespec='seconds')}")


def open_gaps(conn: psycopg.Connection, gateway_id: str | None = None) -> list[Gap]:
    rows = conn.execute(
        "SELECT gateway_id, epoch, first_seq, last_seq, opened_at FROM gaps "
        "WHERE %(gw)s::text IS NULL OR gateway_id = %(gw)s ORDER BY gateway_id, epoch, first_seq",
        {"gw": gateway_id}).fetchall()
    return [Gap(*row) for row in rows]


def chain_state(conn: psycopg.Connection, gateway_id: str, findings: int = 20) -> dict:
    """The gateway's row of `gateways`, its open gaps and its latest findings, as plain data."""
    row = conn.execute(
        "SELECT public_key, enrolled_at, epoch, boot_id, low_seq, head_seq, head_hash, batches, samples, events,"
        " duplicates, last_batch_at FROM gateways WHERE gateway_id = %s", (gateway_id,)).fetchone()
    if row is None:
        raise AdminError(f"{gateway_id} is not enrolled")
    key, enrolled, epoch, boot, low, head, head_hash, batches, samples, events, duplicates, last = row
    latest = conn.execute(
        "SELECT at, kind, serious, epoch, seq, detail FROM findings WHERE gateway_id = %s ORDER BY id DESC LIMIT %s",
        (gateway_id, findings)).fetchall()
    return {
        "gateway_id": gateway_id,
        "key_fingerprint": fingerprint(bytes(key)),
        "enrolled_at": enrolled.isoformat(timespec="seconds"),
        "epoch": epoch,
        "boot_id": boot.hex() if boot else None,
        "low_seq": low,
        "head_seq": head,
        "head_hash": head_hash.hex() if head_hash else None,
        "batches": batches,
        "samples": samples,
        "events": events,
        "duplicates": duplicates,
        "last_batch_at": last.isoformat(timespec="seconds") if last else None,
        "open_gaps": [gap.format() for gap in open_gaps(conn, gateway_id)],
        "findings": [
            {"at": at.isoformat(timespec="seconds"), "kind": kind, "serious": serious, "epoch": ep,
             "seq": int(seq) if seq is not None else None, "detail": detail}
            for at, kind, serious, ep, seq, detail in latest
        ],
    }
