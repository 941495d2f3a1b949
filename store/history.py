"""Local history: read the samples of one tag, or the events, between two times.

Acknowledged rows leave the outbox for a table of their day (`store.keeping`); rows not yet
acknowledged are still in the outbox. A query reads both in one read transaction, so a row moving
from the outbox to its day while the query runs is seen exactly once, and a plant whose uplink has
been down for a week still sees that week.

    history = History.open(Path("/var/lib/gatewayd/gatewayd.db"))   # read-only, never blocks the daemon
    trend = history.samples("TI101", start, end)     # TagHistory: ts, value, quality (numpy, by ts)
    events = history.events(start, end)              # list[Event], by ts
    history.close()

Layout: one pair of tables per UTC day of the rows' gateway time `ts`: `history_samples_YYYYMMDD`
(WITHOUT ROWID, primary key (tag_id, ts, id): a tag's day is one contiguous run of pages, so a day of
one tag at 1 s, 86,400 rows, is one range scan) and `history_events_YYYYMMDD`, listed in
`history_days`. Dropping the oldest day is a DROP TABLE, whose cost does not grow with its rows'
count as a DELETE's would (docs/operations.md, bench/bench_history.py).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.types import Event
from store.records import event_from_row

DAY = 86400  # seconds: history is kept, counted and dropped by UTC day of the rows' gateway time
SAMPLE, EVENT = 0, 1


class HistoryError(ValueError):
    """A query that cannot be answered as asked: an unknown tag, an empty or reversed range."""


def day_of(ts: float) -> int:
    """UTC day number (days since 1970-01-01) of a Unix time; truncated as SQL's CAST(ts / 86400 AS INTEGER) is."""
    return int(ts / DAY)


def day_name(day: int) -> str:
    """YYYYMMDD of a day number: the suffix of its tables."""
    return time.strftime("%Y%m%d", time.gmtime(day * DAY))


def samples_table(day: int) -> str:
    return f"history_samples_{day_name(day)}"


def events_table(day: int) -> str:
    return f"history_events_{day_name(day)}"


@dataclass(frozen=True, eq=False)
class TagHistory:
    """One tag's samples in time order: Unix seconds, value (NaN when bad), quality code."""

    tag: str
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class DayInfo:
    """A day kept in history: its number, date, rows and the bytes its tables took as they were filled."""

    day: int
    date: str
    samples: int
    events: int
    bytes: int


class History:
    """Read-only view of a store's history (and of its outbox, where the newest rows still wait).

    Opened on the SQLite file in read-only mode: in WAL mode readers never block the daemon's writes,
    nor does it block them. One History per thread.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> History:
        """Open the store at `path` read-only; raises sqlite3.OperationalError when it cannot be read."""
        conn = sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    def tags(self) -> list[str]:
        """Every tag name the store has seen, sorted."""
        return [name for (name,) in self._conn.execute("SELECT name FROM tags ORDER BY name")]

    def days(self) -> list[DayInfo]:
        """The days kept, oldest first."""
        return [DayInfo(day, day_name(day), samples, events, size) for day, samples, events, size in
                self._conn.execute("SELECT day, samples, events, bytes FROM history_days ORDER BY day")]

    def samples(self, tag: str, start: float, end: float) -> TagHistory:
        """Samples of `tag` with start <= ts < end, in time order (ties in commit order).

        Raises HistoryError for a tag the store has never seen or a range with end <= start.
        """
        _check_range(start, end)
        conn = self._conn
        conn.execute("BEGIN")
        try:
            found = conn.execute("SELECT id FROM tags WHERE name = ?", (tag,)).fetchone()
            if found is None:
                raise HistoryError(f"unknown tag {tag!r}: the store has no samples of it")
            rows: list[tuple] = []
            for day in self._days_between(start, end):
                rows += conn.execute(
                    f"SELECT ts, value, quality FROM {samples_table(day)} WHERE tag_id = ? AND ts >= ? AND ts < ?",
                    (found[0], start, end)).fetchall()
            waiting = conn.execute(
                f"SELECT ts, value, quality FROM outbox WHERE kind = {SAMPLE} AND tag_id = ? AND ts >= ? AND ts < ? "
                "ORDER BY ts, id", (found[0], start, end)).fetchall()
        finally:
            conn.execute("COMMIT")
        if waiting:
            rows = sorted(rows + waiting, key=lambda row: row[0])  # stable: ties keep commit order
        table = np.array(rows, dtype=np.float64).reshape(-1, 3)  # NULL value -> NaN
        return TagHistory(tag, table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(np.uint8))

    def events(self, start: float, end: float) -> list[Event]:
        """Events with start <= ts < end, in time order (ties in commit order). Raises HistoryError for end <= start."""
        _check_range(start, end)
        conn = self._conn
        conn.execute("BEGIN")
        try:
            rows: list[tuple] = []
            for day in self._days_between(start, end):
                rows += conn.execute(f"SELECT id, ts, body FROM {events_table(day)} WHERE ts >= ? AND ts < ?",
                                     (start, end)).fetchall()
            rows += conn.execute(f"SELECT id, ts, body FROM outbox WHERE kind = {EVENT} AND ts >= ? AND ts < ?",
                                 (start, end)).fetchall()
        finally:
            conn.execute("COMMIT")
        rows.sort(key=lambda row: (row[1], row[0]))
        return [event_from_row(ts, body) for _, ts, body in rows]

    def _days_between(self, start: float, end: float) -> list[int]:
        return [day for (day,) in self._conn.execute(
            "SELECT day FROM history_days WHERE day BETWEEN ? AND ? ORDER BY day", (day_of(start), day_of(end)))]


def _check_range(start: float, end: float) -> None:
    if not end > start:
        raise HistoryError(f"the range must end after it starts (start {start:g}, end {end:g}, Unix seconds)")
