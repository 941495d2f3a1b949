"""Small shared types: quality codes, events and the sample sink that drivers write into.

They sit on the ground floor so that `drivers/`, `rules/` and `store/` speak them without importing
`gatewayd`, which stays the composition root above them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Quality(enum.IntEnum):
    """Quality of a value, one byte on the wire.

    0 is good; 1-15 uncertain; 16 and above bad, each with its reason, so that a platform can tell a
    broken sensor from a broken cable without parsing text.
    """

    GOOD = 0
    UNCERTAIN = 1
    STALE = 2
    CLOCK_UNSYNCED = 3
    NO_VALUE = 16
    COMM_FAILURE = 17
    OUT_OF_RANGE = 18
    SENSOR_FAULT = 19
    MAINTENANCE = 20
    DEVICE_ERROR = 21
    DECODE_ERROR = 22

    @property
    def is_good(self) -> bool:
        return self == Quality.GOOD

    @property
    def is_bad(self) -> bool:
        return self >= Quality.NO_VALUE


QUALITY_BAD_MIN = int(Quality.NO_VALUE)


def quality_name(code: int | None) -> str:
    """GOOD, COMM_FAILURE, SENSOR_FAULT, MAINTENANCE, ... for a quality byte ("?" for none, the number for
    a code this version does not know)."""
    if code is None:
        return "?"
    try:
        return Quality(code).name
    except ValueError:
        return str(code)


def quality_note(code: int | None) -> str:
    """` [COMM_FAILURE]` to follow a value whose quality is not good, so a held alarm says why; "" if good."""
    return "" if code is None or code == Quality.GOOD else f" [{quality_name(code)}]"


class Priority(enum.IntEnum):
    """Priority of an event; higher is more urgent. Alarm priorities map onto these."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: an alarm transition, a device going down, an operator action.

    `source` names the tag, device or interlock it concerns. `data` holds kind-specific fields and
    must be JSON-serialisable. Events are never evicted from the store.
    """

    kind: str
    ts: float
    source: str
    message: str
    priority: Priority = Priority.INFO
    data: dict[str, Any] = field(default_factory=dict)


class SampleSink(Protocol):
    """Where a driver puts what it read. Implemented by the point table.

    `rows` index the point table; `quality` is one code for all rows or one per row; `source_ts` is
    the device's own timestamp in Unix seconds when the protocol provides one, else None.
    `read_at` is when the answer carrying these values arrived, on the monotonic clock
    (`time.monotonic()`), one for all rows or one per row; None means now. The sink turns it into
    gateway (wall-clock) time itself, so that a value carries the time of its own answer rather than
    the time the driver got round to writing it, and a wall-clock step in between cannot skew it.
    """

    def write(
        self,
        rows: np.ndarray,
        values: np.ndarray,
        quality: int | np.ndarray = Quality.GOOD,
        source_ts: float | np.ndarray | None = None,
        read_at: float | np.ndarray | None = None,
    ) -> None: ...

    def set_quality(self, rows: np.ndarray, quality: int, read_at: float | np.ndarray | None = None) -> None:
        """Mark rows with a (bad) quality while keeping their last value; `read_at` as in `write`
        (the time of the answer that told, or None for now)."""
        ...

    def confirm(self, rows: np.ndarray, read_at: float | None = None) -> None:
        """The device confirmed, without resending them, that `rows` still hold their last values (an
        OPC UA publish, data or keep-alive): they count as read at `read_at`, which keeps them from
        turning STALE and clears STALE."""
        ...

    def widen_stale_after(self, rows: np.ndarray, seconds: float) -> None:
        """The device refreshes `rows` less often than their configuration assumed (an OPC UA server
        granted a slower subscription than asked): they turn STALE no sooner than `seconds` after their
        last read. Never shortens a tag's configured `stale_after`; a later call replaces an earlier one."""
        ...

    def event(self, event: Event) -> None: ...
