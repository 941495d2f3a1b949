"""Local history: read the samples of one tag, or the events, between two times.

Acknowledged rows leave the outbox for a table of their day (`store.keeping`); rows not yet
acknowledged are still in the outbox. A query reads both in one read transaction, so a row moving
from the outbox to its day while the query runs is seen exactly once, and a plant whose uplink has
been down for a week still sees that week.

    history = History.open(Path("/var/lib/gatewayd/gatewayd.db"))   # read-only, never blocks the daemon
    trend = history.samples("TI101", start, end)     # TagHistory: ts, value, quality (numpy, by ts)
    drawn = history.trend("TI101", start, end, 1000) # TagTrend: per span count, bad, low, high (SQL-side)
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

from core.types import QUALITY_BAD_MIN, Event
from store.blocks import unpack
from store.records import event_from_row

DAY = 86400  # seconds: history is kept, counted and dropped by UTC day of the rows' gateway time
SAMPLE, EVENT, BLOCK = 0, 1, 2
ROW = np.dtype([("ts", np.float64), ("value", np.float64), ("quality", np.uint8)])


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


@dataclass(frozen=True, eq=False)
class TagTrend:
    """One tag's range cut into equal spans starting at `start[i]`, `width` seconds each: samples, bad ones,
    lowest and highest value (NaN when the span has no value)."""

    tag: str
    start: np.ndarray
    width: float
    count: np.ndarray
    bad: np.ndarray
    low: np.ndarray
    high: np.ndarray


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
        """Samples of `tag` with start <= ts < end, in time order (ties in commit order); non-finite values as NaN.

        Raises HistoryError for a tag the store has never seen or a range with end <= start.
        """
        parts = self._read(tag, start, end, "SELECT ts, ifnull(value, 9e999), quality FROM {table} WHERE {where}",
                           lambda cursor: np.fromiter(cursor, dtype=ROW),
                           lambda rows: rows[np.argsort(rows["ts"], kind="stable")])
        rows = np.concatenate(parts)
        if len(parts[-1]) and len(rows) > len(parts[-1]):  # rows still in the outbox may interleave the newest day
            rows = rows[np.argsort(rows["ts"], kind="stable")]
        value = rows["value"]
        value[~np.isfinite(value)] = np.nan  # 9e999 is SQL's infinity, standing for NULL
        return TagHistory(tag, rows["ts"], value, rows["quality"])

    def trend(self, tag: str, start: float, end: float, buckets: int) -> TagTrend:
        """`tag` between start and end cut into `buckets` equal spans: per span its sample count, bad-quality
        count, and the lowest and highest value (NaN when no good value). For drawing long ranges: the work
        is done in SQL, and the answer has at most `buckets` rows whatever the range holds."""
        if buckets < 1:
            raise HistoryError(f"buckets must be at least 1, not {buckets}")
        width = (end - start) / buckets
        query = (f"SELECT CAST((ts - {float(start)!r}) / {width!r} AS INTEGER) AS bucket, count(*), "
                 f"sum(quality >= {QUALITY_BAD_MIN}), min(value), max(value) FROM {{table}} WHERE {{where}} "
                 "GROUP BY bucket")
        parts = self._read(tag, start, end, query, lambda cursor: cursor.fetchall(),
                           lambda rows: _spans(rows, start, width))
        count = np.zeros(buckets, dtype=np.int64)
        bad = np.zeros(buckets, dtype=np.int64)
        low = np.full(buckets, np.inf)
        high = np.full(buckets, -np.inf)
        for bucket, n, n_bad, least, most in (row for part in parts for row in part):
            bucket = min(bucket, buckets - 1)  # float rounding at the range's end
            count[bucket] += n
            bad[bucket] += n_bad
            if least is not None:
                low[bucket], high[bucket] = min(low[bucket], least), max(high[bucket], most)
        low[np.isinf(low)] = np.nan
        high[np.isinf(high)] = np.nan
        return TagTrend(tag, start + width * np.arange(buckets), width, count, bad, low, high)

    def _read(self, tag: str, start: float, end: float, query: str, fetch, from_outbox) -> list:
        """`fetch(cursor)` of `query` over every day table of the range, then `from_outbox` of the outbox's
        samples of the tag in the range (ROW, in commit order), in one read transaction (a row moving into
        history meanwhile is seen once)."""
        _check_range(start, end)
        conn = self._conn
        conn.execute("BEGIN")
        try:
            found = conn.execute("SELECT id FROM tags WHERE name = ?", (tag,)).fetchone()
            if found is None:
                raise HistoryError(f"unknown tag {tag!r}: the store has no samples of it")
            where = "tag_id = ? AND ts >= ? AND ts < ?"
            parts = [fetch(conn.execute(query.format(table=samples_table(day), where=where), (found[0], start, end)))
                     for day in self._days_between(start, end)]
            parts.append(from_outbox(_outbox_rows(conn, found[0], start, end)))
        finally:
            conn.execute("COMMIT")
        return parts

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


def _outbox_rows(conn: sqlite3.Connection, tag_id: int, start: float, end: float) -> np.ndarray:
    """The tag's samples waiting in the outbox with start <= ts < end, in commit order (ROW; NaN values as NULL's
    stand-in 9e999, as the day tables' query gives them)."""
    parts = []
    for (body,) in conn.execute(f"SELECT body FROM outbox WHERE kind = {BLOCK} AND ts < ? ORDER BY id", (end,)):
        block = unpack(body)
        chosen = (block.tag_id == tag_id) & (block.ts >= start) & (block.ts < end)
        rows = np.empty(int(chosen.sum()), dtype=ROW)
        rows["ts"], rows["value"], rows["quality"] = block.ts[chosen], block.value[chosen], block.quality[chosen]
        rows["value"][np.isnan(rows["value"])] = 9e999
        parts.append(rows)
    return np.concatenate(parts) if parts else np.empty(0, dtype=ROW)


def _spans(rows: np.ndarray, start: float, width: float) -> list[tuple]:
    """What `trend`'s query gives for a day table, for outbox rows: per span (bucket, count, bad, min, max)."""
    spans = []
    bucket = ((rows["ts"] - start) / width).astype(np.int64)
    for number in np.unique(bucket).tolist():
        chosen = rows[bucket == number]
        values = chosen["value"][np.isfinite(chosen["value"])]
        spans.append((number, len(chosen), int((chosen["quality"] >= QUALITY_BAD_MIN).sum()),
                      float(values.min()) if len(values) else None, float(values.max()) if len(values) else None))
    return spans


def _check_range(start: float, end: float) -> None:
    if not end > start:
        raise HistoryError(f"the range must end after it starts (start {start:g}, end {end:g}, Unix seconds)")
