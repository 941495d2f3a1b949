"""Notice wall-clock steps and flag the samples stamped around them.

Every span in gatewayd (scan spacing, report intervals, poll schedules, acknowledgement timeouts,
backoff, rate limits) is measured on the monotonic clock, so a step of the wall clock changes no
delay and no sequence number. What a step does change is the gateway timestamps of samples, so
`ClockGuard` watches for steps and says so.

Detection compares, at every scan tick, how far the wall clock and the monotonic clock moved since
the previous tick: a difference beyond `threshold` is a step (NTP slewing changes the rate by at
most 0.05 %, far below it). This works everywhere, including under libfaketime and in containers,
where the kernel's own flag (adjtimex STA_UNSYNC) says "unsynchronised" on any box without an NTP
client and so cannot tell a stepped clock from a steady one. After a step, every good sample of the
next `hold` seconds (monotonic) is stored with quality CLOCK_UNSYNCED: those of the tick that saw
the step were stamped partly on either side of it, and a clock that was just stepped is suspect
until it has run steadily for a while. A `clock_jump` event carries the size of the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from core.types import Event, Priority, Quality

log = logging.getLogger("gatewayd.clock")

THRESHOLD = 2.0  # seconds of disagreement between the two clocks over one tick
HOLD = 60.0


class Appender(Protocol):
    def append(self, samples, events: Sequence[Event]) -> None: ...


class ClockGuard:
    """Wraps what the scan appends to (the store, or its spill); counts steps in `jumps`."""

    def __init__(self, inner: Appender, threshold: float = THRESHOLD, hold: float = HOLD,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.inner, self.threshold, self.hold = inner, threshold, hold
        self._wall, self._monotonic = wall, monotonic
        self._last: tuple[float, float] | None = None
        self._suspect_until = -float("inf")
        self.jumps = 0
        self.flagged = 0

    def append(self, samples, events: Sequence[Event]) -> None:
        wall, mono = self._wall(), self._monotonic()
        if self._last is not None:
            step = (wall - self._last[0]) - (mono - self._last[1])
            if abs(step) > self.threshold:
                events = [*events, self._jumped(wall, step)]
        self._last = (wall, mono)
        if mono < self._suspect_until and samples is not None and len(samples):
            good = samples.quality == Quality.GOOD
            samples.quality[good] = Quality.CLOCK_UNSYNCED
            self.flagged += int(good.sum())
        self.inner.append(samples, events)

    def _jumped(self, wall: float, step: float) -> Event:
        self.jumps += 1
        self._suspect_until = self._monotonic() + self.hold
        direction = "forward" if step > 0 else "back"
        log.warning("wall clock stepped %s by %.3f s; samples of the next %.0f s are flagged CLOCK_UNSYNCED",
                    direction, abs(step), self.hold)
        return Event("clock_jump", wall, "clock", f"wall clock stepped {direction} by {abs(step):.3f} s",
                     Priority.MEDIUM, {"step_seconds": round(step, 3), "flagged_for_seconds": self.hold,
                                       "quality": int(Quality.CLOCK_UNSYNCED)})

