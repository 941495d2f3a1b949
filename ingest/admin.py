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


def key_id(raw: bytes) -> bytes:
    """The 8-byte key id of docs/uplink.md: the first 8 bytes of SHA-256 over the raw key."""
    return hashlib.sha256(raw).digest()[:8]


def fingerprint(raw: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw key, as `gatewayd keygen` prints it."""
    return key_id(raw).hex()


def enrol(conn: psycopg.Connection, gateway_id: str, raw_key: bytes, replace: bool = False) -> str:
    """Pin `raw_key` as the gateway's enrolled key; a different key already enrolled is kept unless
    `replace` (a re-pinning by hand, e.g. after a lost key). Returns "enrolled", "unchanged" or "replaced"."""
    new_id = key_id(raw_key)
    with conn.transaction():
        row = conn.execute("SELECT enrolled_key_id FROM gateways WHERE gateway_id = %s FOR UPDATE",
                           (gateway_id,)).fetchone()
        if row is not None and bytes(row[0]) == new_id:
            return "unchanged"
        if row is not None and not replace:
            raise AdminError(f"{gateway_id} is enrolled with key {bytes(row[0]).hex()}, not {new_id.hex()}: "
                             "pass --replace to pin the new key by hand")
        if row is None:
            conn.execute("INSERT INTO gateways (gateway_id, enrolled_key_id) VALUES (%s, %s)", (gateway_id, new_id))
        else:
            conn.execute("UPDATE gateways SET enrolled_key_id = %s WHERE gateway_id = %s", (new_id, gateway_id))
        conn.execute("INSERT INTO gateway_keys (gateway_id, key_id, public_key, pinned_by) VALUES (%s, %s, %s, "
                     "'enrol') ON CONFLICT DO NOTHING", (gateway_id, new_id, raw_key))
        return "enrolled" if row is None else "replaced"


@dataclass(frozen=True)
class Gap:
    gateway_id: str
    epoch: bytes
    first_seq: int
    last_seq: int
    opened_at: datetime
    alerted: bool
    lost: bool

    def format(self) -> str:
        span = str(self.first_seq) if self.first_seq == self.last_seq else f"{self.first_seq}..{self.last_seq}"
        state = " LOST (the gateway no longer holds it)" if self.lost else " ALERTED" if self.alerted else ""
        return (f"{self.gateway_id} epoch {bytes(self.epoch).hex()}: seq {span} "
                f"({self.last_seq - self.first_seq + 1} batches) open since "
                f"{self.opened_at.isoformat(timespec='seconds')}{state}")


def open_gaps(conn: psycopg.Connection, gateway_id: str | None = None) -> list[Gap]:
    rows = conn.execute(
        "SELECT gateway_id, epoch, first_seq, last_seq, opened_at, alerted, lost FROM gaps "
        "WHERE %(gw)s::text IS NULL OR gateway_id = %(gw)s ORDER BY gateway_id, epoch, first_seq",
        {"gw": gateway_id}).fetchall()
    return [Gap(*row) for row in rows]


def chain_state(conn: psycopg.Connection, gateway_id: str, findings: int = 20) -> dict:
    """The gateway's keys, epochs (current first), open gaps, held payloads and latest findings."""
    row = conn.execute("SELECT enrolled_key_id, current_epoch, enrolled_at, batches, samples, events, duplicates,"
                       " last_batch_at FROM gateways WHERE gateway_id = %s", (gateway_id,)).fetchone()
    if row is None:
        raise AdminError(f"{gateway_id} is not enrolled")
    enrolled, current, enrolled_at, batches, samples, events, duplicates, last = row
    keys = conn.execute("SELECT key_id, successor, pinned_at, pinned_by FROM gateway_keys WHERE gateway_id = %s "
                        "ORDER BY pinned_at", (gateway_id,)).fetchall()
    epochs = conn.execute(
        "SELECT epoch, reset_reason, begun_at, low_seq, head_seq, top_seq, head_hash, boot_id, anchor_seq,"
        " hb_head_seq, hb_oldest_unacknowledged FROM epochs WHERE gateway_id = %s ORDER BY epoch = %s DESC,"
        " begun_at DESC", (gateway_id, current)).fetchall()
    held = conn.execute("SELECT reason, count(*) FROM held WHERE gateway_id = %s GROUP BY reason ORDER BY reason",
                        (gateway_id,)).fetchall()
    latest = conn.execute(
        "SELECT at, kind, serious, epoch, seq, detail FROM findings WHERE gateway_id = %s ORDER BY id DESC LIMIT %s",
        (gateway_id, findings)).fetchall()

    def hexed(value) -> str | None:
        return bytes(value).hex() if value is not None else None

    return {
        "gateway_id": gateway_id,
        "enrolled_at": enrolled_at.isoformat(timespec="seconds"),
        "enrolled_key_id": hexed(enrolled),
        "keys": [{"key_id": hexed(k), "successor": hexed(succ), "pinned_at": at.isoformat(timespec="seconds"),
                  "pinned_by": by} for k, succ, at, by in keys],
        "current_epoch": hexed(current),
        "epochs": [
            {"epoch": hexed(ep), "reset_reason": reason, "begun_at": begun.isoformat(timespec="seconds"),
             "low_seq": low, "head_seq": head, "top_seq": top, "head_hash": hexed(head_hash),
             "boot_id": hexed(boot), "anchor_seq": anchor, "heartbeat_head_seq": hb_head,
             "heartbeat_oldest_unacknowledged": hb_oldest}
            for ep, reason, begun, low, head, top, head_hash, boot, anchor, hb_head, hb_oldest in epochs
        ],
        "batches": batches,
        "samples": samples,
        "events": events,
        "duplicates": duplicates,
        "last_batch_at": last.isoformat(timespec="seconds") if last else None,
        "open_gaps": [gap.format() for gap in open_gaps(conn, gateway_id)],
        "held": {reason: count for reason, count in held},
        "findings": [
            {"at": at.isoformat(timespec="seconds"), "kind": kind, "serious": serious, "epoch": hexed(ep),
             "seq": int(seq) if seq is not None else None, "detail": detail}
            for at, kind, serious, ep, seq, detail in latest
        ],
    }
