"""What the ingest service notices about a batch, recorded as a row of `findings` and counted in metrics."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """A finding's kind: its name in the `findings` table and the metric label, and whether it is serious
    (something is wrong: alert) or a note (the stream is fine, but a person may want to know)."""

    # the names of docs/uplink.md's "Verifying a stream, step by step", in its order
    MALFORMED = ("malformed", True)  # step 1: not a well-formed envelope: dropped
    WRONG_GATEWAY = ("wrong_gateway", True)  # step 2: another gateway than its topic: dropped
    UNKNOWN_GATEWAY = ("unknown_gateway", True)  # step 2: no gateway of that id is enrolled: dropped
    UNKNOWN_KEY = ("unknown_key", False)  # step 3: signed by a key not pinned (yet): held
    BAD_SIGNATURE = ("bad_signature", True)  # step 4: forged or damaged: dropped
    STALE_HEARTBEAT = ("stale_heartbeat", False)  # step 5: a replayed or late heartbeat: ignored
    ANCHOR = ("anchor", False)  # step 5: a heartbeat anchored a receiver with no state for the gateway
    CHAIN_RESET = ("chain_reset", False)  # step 6: a signed reset began a new epoch: stored
    REPLAYED_RESET = ("replayed_reset", True)  # step 6: an older reset sent again: dropped
    RESET_MISMATCH = ("reset_mismatch", True)  # step 6: the reset's idea of the past differs from ours: stored
    UNANCHORED_EPOCH = ("unanchored_epoch", False)  # step 6: an epoch whose seq 1 is not here yet: held
    CONFLICT = ("conflict", True)  # step 7: different bytes for an accepted seq: dropped, the first kept
    UNDECODABLE = ("undecodable", True)  # step 8: signed, body bad (or not storable): in the chain, no content
    RETIRED_KEY = ("retired_key", True)  # step 9: signed by a key its successor replaced: dropped
    KEY_ROTATION = ("key_rotation", False)  # step 9: the next key is pinned
    CHAIN_BREAK = ("chain_break", True)  # step 10: prev_hash does not match a neighbour: stored
    LATE_ARRIVAL = ("late_arrival", False)  # step 11: filled a gap open longer than --late-after: stored
    GAP = ("gap", True)  # step 11: a gap open longer than --gap-alert-after
    LOST = ("lost", True)  # step 11: a heartbeat says the gateway let go of a missing seq
    NEW_BOOT = ("new_boot", False)  # the gateway's daemon restarted (a new boot id): stored

    def __init__(self, label: str, serious: bool) -> None:
        self.label = label
        self.serious = serious


@dataclass(frozen=True)
class Finding:
    kind: Kind
    gateway_id: str | None
    epoch: bytes | None
    seq: int | None
    detail: str
