"""What the ingest service notices about a batch, recorded as a row of `findings` and counted in metrics."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """A finding's kind: its name in the `findings` table and the metric label, and whether it is serious
    (something is wrong: alert) or a note (the stream is fine, but a person may want to know)."""

    MALFORMED = ("malformed", True)  # not a well-formed envelope: dropped
    UNKNOWN_GATEWAY = ("unknown_gateway", True)  # no key is pinned for the gateway it names: dropped
    WRONG_GATEWAY = ("wrong_gateway", True)  # the envelope names another gateway than its topic: dropped
    BAD_SIGNATURE = ("bad_signature", True)  # forged or damaged: dropped
    CONFLICT = ("conflict", True)  # different bytes for an accepted seq (a replay or a reset): first kept
    BAD_BODY = ("bad_body", True)  # signed, but the body does not decode or cannot be stored: dropped
    CHAIN_BREAK = ("chain_break", True)  # prev_hash does not match the neighbouring batch: stored
    LATE = ("late", False)  # filled a gap that had been open longer than the late threshold
    NEW_BOOT = ("new_boot", False)  # the gateway's daemon restarted

    def __init__(self, label: str, serious: bool) -> None:
        self.label = label
        self.serious = serious


@dataclass(frozen=True)
class Finding:
    kind: Kind
    gateway_id: str | None
    epoch: int | None
    seq: int | None
    detail: str
