"""Which chain epoch the gateway continues, or begins, at start (docs/uplink.md#epochs-and-chain_reset).

The database alone cannot tell a new gateway from one whose database was lost, nor a restored backup
from an intact database: both look like a chain that starts (or goes on) from where the database
says. So a small file beside the database (`gatewayd.chain` beside `gatewayd.db`) remembers the epoch and head the
gateway last knew. The publisher rewrites it at every heartbeat and at stop; at start it is compared
with the database, and a mismatch begins a new epoch with a signed `chain_reset` saying why, instead of
reusing sequence numbers the platform already holds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.batchformat import CHAIN_RESET
from core.types import Event, Priority
from store import ChainHead, Store

log = logging.getLogger("gatewayd.uplink")


@dataclass(frozen=True)
class Marker:
    """What the marker file holds: the epoch and head the gateway last wrote down."""

    epoch: bytes
    seq: int
    digest: bytes


def marker_path(store_path: Path) -> Path:
    """`gatewayd.chain` beside `gatewayd.db`: not `gatewayd.db.chain`, which a wipe of `gatewayd.db*` would take."""
    return store_path.with_name(store_path.stem + ".chain")


def read_marker(path: Path) -> Marker | None:
    """The marker, or None when there is none; an unreadable one counts as none, with a warning."""
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        return Marker(bytes.fromhex(fields["epoch"]), int(fields["seq"]), bytes.fromhex(fields["hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("chain marker %s is unreadable (%s); treated as missing", path, exc)
        return None


def write_marker(path: Path, head: ChainHead) -> None:
    """Replace the marker atomically (a crash leaves the old one or the new one, never half of one)."""
    text = json.dumps({"epoch": head.epoch.hex(), "seq": head.seq, "hash": head.digest.hex()})
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


def reset_reason(head: ChainHead, marker: Marker | None) -> str | None:
    """Why the chain cannot go on from the database's head, or None when it can."""
    if head.epoch is None:
        return "database_lost" if marker is not None else "new_install"
    if marker is not None and (marker.epoch != head.epoch or marker.seq > head.seq):
        return "restored_backup"
    return None


def begin_epoch_if_needed(store: Store, gateway_id: str) -> str | None:
    """Begin a new epoch when the database and the marker say the chain cannot go on; return the reason.

    Either way the marker names the database's chain afterwards."""
    path = marker_path(store.path)
    head, marker = store.chain_head(), read_marker(path)
    reason = reset_reason(head, marker)
    if reason is not None:
        epoch = os.urandom(16)
        data = {"epoch": epoch.hex(), "reason": reason,
                "previous_epoch": marker.epoch.hex() if marker else None,
                "previous_seq": marker.seq if marker else None,
                "previous_hash": marker.digest.hex() if marker else None}
        message = f"{gateway_id} begins chain epoch {epoch.hex()[:8]}: {reason.replace('_', ' ')}"
        store.begin_epoch(epoch, json.dumps({"ts": time.time(), "message": message, "data": data}))
        level = logging.INFO if reason == "new_install" else logging.WARNING
        log.log(level, "%s (previous: %s)", message,
                f"epoch {marker.epoch.hex()[:8]} seq {marker.seq}" if marker else "none known")
    try:
        write_marker(path, store.chain_head())
    except OSError as exc:  # a full disk, say: the next heartbeat tries again
        log.warning("could not write the chain marker %s: %s", path, exc)
    return reason


def reset_event(head: ChainHead, gateway_id: str) -> Event | None:
    """The chain_reset event seq 1 of the head's epoch begins with (None for the zero epoch)."""
    if head.reset is None:
        return None
    fields = json.loads(head.reset)
    return Event(CHAIN_RESET, fields["ts"], gateway_id, fields["message"], Priority.MEDIUM, fields["data"])
