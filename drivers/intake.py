"""Where a decoded reading of a subscribed device goes, and what the device keeps track of per tag.

Shared by the payload profiles (JSON, Sparkplug B) so that every reading is treated alike:

- a reading is written with its value, quality, source time and arrival time (`read_at`, the moment
  paho received the message, not when it was decoded);
- a reading whose source time is earlier than the newest of its tag is kept with that source time
  and flagged: written UNCERTAIN (if it was GOOD) and counted in `out_of_order`;
- a bad outcome (DECODE_ERROR for a payload that did not yield the tag's value) keeps the tag's last
  value, marks it, counts it in `decode_errors` and is logged once per tag until it decodes again;
- every message for a tag, good or bad, counts as having heard its sensor (`heard`), for the check
  that turns a tag that hears nothing for `comm_failure_after` COMM_FAILURE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.kit import DriverStats, Problems
from drivers.writebatch import WriteBatch
from drivers.sourceorder import SourceOrder
from core.types import QUALITY_BAD_MIN, Quality


@dataclass
class InboundStats(DriverStats):
    """The kit's figures (`polls`: messages decoded; `decode_errors`: tag readings that did not decode;
    `reconnects`: connections after the first) and those of a driver fed by pushed messages."""

    messages_dropped: int = 0  # messages the full inbox dropped (reported as gap events)
    out_of_order: int = 0  # readings older than the newest of their tag, kept and flagged UNCERTAIN


class Intake:
    def __init__(self, names: Sequence[str], stats: InboundStats, problems: Problems) -> None:
        self.names, self.stats, self.problems = tuple(names), stats, problems
        size = len(self.names)
        self.order = SourceOrder(size)
        self.heard = np.zeros(size)  # monotonic time each tag last heard from its sensor
        self.silent = np.zeros(size, dtype=np.bool_)  # marked COMM_FAILURE for silence or loss, not heard since
        self.quality = np.full(size, int(Quality.NO_VALUE), dtype=np.uint8)  # the last quality given each tag
        self.batch: WriteBatch | None = None
        self._troubled: set[int] = set()

    def reading(self, position: int, value: float, quality: int, source_ts: float, read_at: float) -> None:
        if not math.isnan(source_ts) and self.order.late(position, source_ts):
            self.stats.out_of_order += 1
            if quality == Quality.GOOD:
                quality = Quality.UNCERTAIN
            self._note(position, f"tag {self.names[position]}: a reading stamped {source_ts:.3f} arrived after a "
                       "newer one; kept UNCERTAIN")
        elif position in self._troubled:
            self._troubled.discard(position)
            self.problems.clear(position, f"tag {self.names[position]}: readings good again")
        self.batch.write(position, value, quality, source_ts, read_at)
        self.quality[position] = quality
        self._heard(position, read_at)

    def bad(self, position: int, quality: Quality, read_at: float, problem: str) -> None:
        """The sensor was heard but its message did not give this tag's value."""
        self.stats.decode_errors += quality == Quality.DECODE_ERROR
        self.batch.mark(position, int(quality), read_at)
        self.quality[position] = quality
        self._heard(position, read_at)
        self._note(position, f"tag {self.names[position]}: {problem}")

    def lost(self, positions: Sequence[int], quality: Quality, read_at: float) -> None:
        """Tags the source said are gone (COMM_FAILURE) or whose readings can no longer be trusted
        (STALE); they keep their last value. A tag whose quality is bad already (COMM_FAILURE,
        DECODE_ERROR, NO_VALUE...) stays so: STALE would look better than what is known."""
        if quality == Quality.STALE:
            positions = [position for position in positions if self.quality[position] < QUALITY_BAD_MIN]
        for position in positions:
            self.batch.mark(position, int(quality), read_at)
        self.quality[list(positions)] = quality
        if quality == Quality.COMM_FAILURE:
            self.silent[list(positions)] = True

    def silence(self, now: float, after: float) -> np.ndarray:
        """Positions that heard nothing for `after` seconds and were not marked yet; marks them."""
        quiet = np.flatnonzero(~self.silent & (now - self.heard > after))
        self.silent[quiet] = True
        self.quality[quiet] = Quality.COMM_FAILURE
        return quiet

    def link_lost(self) -> None:
        """The connection is gone: every tag COMM_FAILURE (the driver marks the rows)."""
        self.silent[:] = True
        self.quality[:] = Quality.COMM_FAILURE

    def _heard(self, position: int, read_at: float) -> None:
        self.heard[position] = read_at
        self.silent[position] = False

    def _note(self, position: int, message: str) -> None:
        self._troubled.add(position)
        self.problems.note(position, message)
