"""Local history: read the samples of one tag, or the events, between two times.

Every row committed into the outbox is also staged for history in the same transaction (a trigger,
store.compaction), and staged rows are compacted about once a minute into per-tag chunks in the table
of their day. A query reads the days' tables and the staged rows in one read transaction, so a
compaction running meanwhile is seen before or after, never half; history never reads the outbox,
and a plant whose uplink has been down for a week still sees that week.

    history = History.open(Path("/var/lib/gatewayd/gatewayd.db"))   # read-only, never blocks the daemon
    trend = history.samples("TI101", start, end)     # TagHistory: ts, value, quality (numpy, by ts)
    drawn = history.trend("TI101", start, end, 1000) # TagTrend: per span count, bad, low, high
    events = history.events(start, end)              # list[Event], by ts
    history.close()

Layout: per UTC day of the samples' gateway time `ts`, `history_chunks_YYYYMMDD` (one row per tag and
compaction, keyed compaction number << 32 | tag id: a compaction appends its chunks at the end of the
table) and `history_events_YYYYMMDD` (keyed by outbox id), listed in `history_days`; the time span of
each compaction in `history_compactions`, so a query looks up one chunk per compaction of its range. A
database kept by gatewayd before chunks may also hold `history_samples_YYYYMMDD` (one row per sample,
key (tag_id, ts, id)): read and dropped by day like the chunks. Dropping the oldest day deletes from
the start of its keys, in steps (store.keeping).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.types import QUALITY_BAD_MIN, Event
from store import blocks, chunks
from store.records import event_from_row

DAY = 86400  # seconds: history is kept, counted and dropped by UTC day of the rows' gateway time
EVENT, BLOCK = 1, 2  # outbox kinds history stages (store.compaction)
CHUNK_KEY = 1 << 32  # a chunk's id: compaction number * CHUNK_KEY + tag id
ROW = np.dtype([("ts", np.float64), ("value", np.float64), ("quality", np.uint8)])  # a per-sample table's row


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


def chunks_table(day: int) -> str:
    return f"history_chunks_{day_name(day)}"


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
    """Read-only view of a store's history.

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
        """The days kept, oldest first (rows still staged are counted into their day when compacted)."""
        return [DayInfo(day, day_name(day), samples, events, size) for day, samples, events, size in
                self._conn.execute("SELECT day, samples, events, bytes FROM history_days ORDER BY day")]

    def samples(self, tag: str, start: float, end: float) -> TagHistory:
        """Samples of `tag` with start <= ts < end, in time order (ties in commit order); non-finite values as NaN.

        Raises HistoryError for a tag the store has never seen or a range with end <= start.
        """
        _check_range(start, end)
        with self._snapshot() as conn:
            found = conn.execute("SELECT id FROM tags WHERE name = ?", (tag,)).fetchone()
            if found is None:
                raise HistoryError(f"unknown tag {tag!r}: the store has no samples of it")
            parts = _TagReader(conn, found[0], start, end).parts()
        ts = np.concatenate([part[0] for part in parts])
        value = np.concatenate([part[1] for part in parts])
        quality = np.concatenate([part[2] for part in parts])
        inside = (ts >= start) & (ts < end)
        ts, value, quality = ts[inside], value[inside], quality[inside]
        if len(ts) > 1 and (ts[1:] < ts[:-1]).any():  # parts are in commit order: time order but for clock steps
            order = np.argsort(ts, kind="stable")
            ts, value, quality = ts[order], value[order], quality[order]
        value[~np.isfinite(value)] = np.nan
        return TagHistory(tag, ts, value, quality)

    def trend(self, tag: str, start: float, end: float, buckets: int) -> TagTrend:
        """`tag` between start and end cut into `buckets` equal spans: per span its sample count, bad-quality
        count, and the lowest and highest value (NaN when no value). For drawing long ranges: the answer
        has at most `buckets` rows whatever the range holds."""
        if buckets < 1:
            raise HistoryError(f"buckets must be at least 1, not {buckets}")
        read = self.samples(tag, start, end)
        width = (end - start) / buckets
        bucket = np.minimum(((read.ts - start) / width).astype(np.int64), buckets - 1)  # float rounding at the end
        count = np.bincount(bucket, minlength=buckets)
        bad = np.bincount(bucket[read.quality >= QUALITY_BAD_MIN], minlength=buckets)
        low, high = np.full(buckets, np.inf), np.full(buckets, -np.inf)
        valued = ~np.isnan(read.value)
        np.minimum.at(low, bucket[valued], read.value[valued])
        np.maximum.at(high, bucket[valued], read.value[valued])
        low[np.isinf(low)] = np.nan
        high[np.isinf(high)] = np.nan
        return TagTrend(tag, start + width * np.arange(buckets), width, count, bad, low, high)

    def events(self, start: float, end: float) -> list[Event]:
        """Events with start <= ts < end, in time order (ties in commit order). Raises HistoryError for end <= start."""
        _check_range(start, end)
        with self._snapshot() as conn:
            rows: list[tuple] = []
            for day in _days_between(conn, start, end):
                rows += conn.execute(f"SELECT id, ts, body FROM {events_table(day)} WHERE ts >= ? AND ts < ?",
                                     (start, end)).fetchall()
            rows += conn.execute(f"SELECT id, ts, body FROM history_staged WHERE kind = {EVENT} AND ts >= ? AND ts < ?",
                                 (start, end)).fetchall()
        rows.sort(key=lambda row: (row[1], row[0]))
        return [event_from_row(ts, body) for _, ts, body in rows]

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: the days, the compactions and the staged rows as of one commit."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")


class _TagReader:
    """The samples of one tag around [start, end) as (ts, value, quality) parts in commit order: rows of the
    per-sample day tables gatewayd kept before chunks, then chunks by compaction, then staged blocks."""

    def __init__(self, conn: sqlite3.Connection, tag_id: int, start: float, end: float) -> None:
        self.conn, self.tag_id, self.start, self.end = conn, tag_id, start, end

    def parts(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        days = _days_between(self.conn, self.start, self.end)
        tables = {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        parts = [self._rows(samples_table(day)) for day in days if samples_table(day) in tables]
        parts += [part for day in days if chunks_table(day) in tables for part in self._chunks(chunks_table(day))]
        parts += self._staged()
        return parts or [(np.zeros(0), np.zeros(0), np.zeros(0, np.uint8))]

    def _rows(self, table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.fromiter(self.conn.execute(
            f"SELECT ts, ifnull(value, 9e999), quality FROM {table} WHERE tag_id = ? AND ts >= ? AND ts < ? "
            "ORDER BY ts, id", (self.tag_id, self.start, self.end)), dtype=ROW)  # 9e999: SQL's infinity for NULL
        return rows["ts"], rows["value"], rows["quality"]

    def _chunks(self, table: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        first, last = self.conn.execute(  # min and max apart: each is one step down the B-tree, together a scan
            f"SELECT (SELECT min(id) FROM {table}), (SELECT max(id) FROM {table})").fetchone()
        if first is None:
            return []
        rows = self.conn.execute(
            f"SELECT h.layout, h.body FROM history_compactions c CROSS JOIN {table} h ON h.id = c.k * {CHUNK_KEY} + ? "
            "WHERE c.k BETWEEN ? AND ? AND c.last_ts >= ? AND c.first_ts < ? ORDER BY c.k",
            (self.tag_id, first // CHUNK_KEY, last // CHUNK_KEY, self.start, self.end))
        return [chunks.unpack(layout, body)[:3] for layout, body in rows]

    def _staged(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        parts = []
        for (body,) in self.conn.execute(f"SELECT body FROM history_staged WHERE kind = {BLOCK} ORDER BY id"):
            block = blocks.unpack(body)
            mine = block.tag_id == self.tag_id
            if mine.any():
                parts.append((block.ts[mine], block.value[mine], block.quality[mine]))
        return parts


def _days_between(conn: sqlite3.Connection, start: float, end: float) -> list[int]:
    return [day for (day,) in conn.execute(
        "SELECT day FROM history_days WHERE day BETWEEN ? AND ? ORDER BY day", (day_of(start), day_of(end)))]


def _check_range(start: float, end: float) -> None:
    if not end > start:
        raise HistoryError(f"the range must end after it starts (start {start:g}, end {end:g}, Unix seconds)")
