"""Out-of-order source times: a reading stamped earlier than the last one of its tag.

Sensors buffer and resend, brokers redeliver QoS 1 messages after a reconnect, gateways batch: a
reading can arrive after a newer one. It is kept with its own source time (it did happen then) and
flagged, so the caller writes it UNCERTAIN and counts it; an equal time is a repeat, not out of
order. The newest source time seen per position is what later readings are compared with.
"""

from __future__ import annotations

import numpy as np


class SourceOrder:
    def __init__(self, size: int) -> None:
        self.latest = np.full(size, -np.inf)

    def late(self, position: int, source_ts: float) -> bool:
        """Whether `source_ts` is earlier than the newest seen at `position`; records it if newer.
        NaN (no source time) is never late."""
        latest = self.latest[position]
        if source_ts < latest:
            return True
        if source_ts > latest:
            self.latest[position] = source_ts
        return False

    def forget(self, positions: np.ndarray) -> None:
        """A new session of the source (a Sparkplug rebirth): its clock may have been set back."""
        self.latest[positions] = -np.inf
