"""Keeping history: acknowledged rows move into the table of their day; the oldest day goes first.

`keep_rows` runs inside the acknowledgement's transaction, before its DELETE (`Store.acknowledge`):
the rows are copied by one INSERT ... SELECT per day they fall in, all inside SQLite, so a row is
either still in the outbox or in history, whatever moment a crash hits, and the per-value cost is
SQLite's own B-tree insert, no Python object per row. The pages each day's inserts take are counted
into `history_days.bytes` (page_count - freelist_count before and after), so the bound is exact to
the page without walking any table.

`drop_days` (after each acknowledgement, and at open) drops the oldest day while it ended more than
`keep` ago or while the days together take more than `max_bytes`: DROP_ROWS rows at most per call, in
key order (a range of the B-tree each time), so a day of any size never holds the store for long (a
DROP TABLE of a 1.5-million-row day took 2 s on the development machine); the step that empties the
day drops its tables and writes, in the same transaction, a `history_dropped` event into the outbox,
which travels upstream like any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.types import Event, Priority
from store.blocks import unpack
from store.history import BLOCK, DAY, EVENT, day_name, events_table, samples_table
from store.retention import used_bytes

KEEP = 30 * DAY  # MEM Order No. 40: records of major hazard sources kept at least 30 days
MAX_BYTES = 4 << 30
DROPPED_KIND = "history_dropped"
# bytes a sample takes in history, tables and B-tree pages included: bench/bench_history.py measured 34.8
# (1,000 tags, no device timestamps); rounded up for a device timestamp (8 more) and half-full pages
BYTES_PER_SAMPLE = 40
DROP_ROWS = 20_000  # rows of an old day deleted per call of drop_days


@dataclass(frozen=True)
class Keeping:
    """How long and how much history to keep; `keep` 0 keeps none (and drops the days kept before)."""

    keep: float = KEEP
    max_bytes: int = MAX_BYTES

    def __post_init__(self) -> None:
        if self.keep < 0:
            raise ValueError(f"keep must not be negative, not {self.keep}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {self.max_bytes}")


def keep_rows(conn: sqlite3.Connection, first: int, last: int, keeping: Keeping, now: float) -> None:
    """Copy outbox rows `first`..`last` into their days' tables. Call inside the acknowledgement's transaction.

    Rows of a day that ended more than `keep` ago (a backlog older than the keep, a clock far behind)
    are not kept: `drop_days` would drop that day at once.
    """
    blocks = [(row_id, unpack(body)) for row_id, body in conn.execute(
        f"SELECT id, body FROM outbox WHERE kind = {BLOCK} AND id BETWEEN ? AND ?", (first, last))]
    days = {day for (day,) in conn.execute(
        f"SELECT DISTINCT CAST(ts / {DAY} AS INTEGER) FROM outbox WHERE kind = {EVENT} AND id BETWEEN ? AND ?",
        (first, last))}
    for _, block in blocks:
        days.update(np.unique((block.ts / DAY).astype(np.int64)).tolist())
    for day in sorted(days):
        if _expired(day, keeping, now):
            continue
        before = used_bytes(conn)
        if conn.execute("INSERT OR IGNORE INTO history_days VALUES (?, 0, 0, 0)", (day,)).rowcount:
            _create_day(conn, day)
        where = f"id BETWEEN ? AND ? AND CAST(ts / {DAY} AS INTEGER) = ?"
        bounds = (first, last, day)
        samples = _keep_samples(conn, blocks, day)
        events = conn.execute(
            f"INSERT INTO {events_table(day)} SELECT id, ts, body FROM outbox WHERE kind = {EVENT} AND {where}",
            bounds).rowcount
        conn.execute("UPDATE history_days SET samples = samples + ?, events = events + ?, bytes = bytes + ? "
                     "WHERE day = ?", (samples, events, used_bytes(conn) - before, day))


def _keep_samples(conn: sqlite3.Connection, blocks: list, day: int) -> int:
    """Copy the samples of `blocks` ((outbox id, SampleBlock)) that fall in `day` into its table; return how many."""
    rows: list[tuple] = []
    for row_id, block in blocks:
        chosen = np.flatnonzero((block.ts / DAY).astype(np.int64) == day)
        rows += zip(block.tag_id[chosen].tolist(), block.ts[chosen].tolist(), [row_id] * len(chosen),
                    _nan_to_none(block.value[chosen]), block.quality[chosen].tolist(),
                    _nan_to_none(block.source_ts[chosen]))
    return conn.executemany(f"INSERT OR IGNORE INTO {samples_table(day)} VALUES (?, ?, ?, ?, ?, ?)", rows).rowcount


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if value != value else value for value in values.tolist()]


def _expired(day: int, keeping: Keeping, now: float) -> bool:
    return (day + 1) * DAY <= now - keeping.keep


def _create_day(conn: sqlite3.Connection, day: int) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {samples_table(day)} (tag_id INTEGER NOT NULL, ts REAL NOT NULL, "
                 "id INTEGER NOT NULL, value REAL, quality INTEGER, source_ts REAL, "
                 "PRIMARY KEY (tag_id, ts, id)) WITHOUT ROWID")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {events_table(day)} (id INTEGER PRIMARY KEY, ts REAL NOT NULL, "
                 "body TEXT NOT NULL)")


def drop_days(conn: sqlite3.Connection, keeping: Keeping, now: float, event_body: Callable[[Event], str],
              max_rows: int = DROP_ROWS) -> int:
    """Drop the oldest day while it is past `keep` or the days exceed `max_bytes`; return the days dropped.

    A day goes in steps of at most `max_rows` rows in all per call, each step one transaction of its own
    (`conn` is in autocommit mode), so no call holds the store for long whatever a day holds; the next
    call goes on where this one stopped. The step that finds the day's tables empty drops them, removes
    its catalog row and writes its `history_dropped` event, in one transaction.
    """
    dropped, left = 0, max_rows
    while left > 0:
        days = conn.execute("SELECT day, samples, events, bytes FROM history_days ORDER BY day").fetchall()
        if not days:
            break
        day, samples, events, _ = days[0]
        if _expired(day, keeping, now):
            reason, why, priority = "keep", f"older than history.keep ({keeping.keep:g} s)", Priority.INFO
        elif sum(row[3] for row in days) > keeping.max_bytes:
            reason, why, priority = "max_bytes", f"history over history.max_bytes ({keeping.max_bytes} bytes)", \
                Priority.MEDIUM
        else:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = used_bytes(conn)
            removed = _delete_first(conn, samples_table(day), "tag_id, ts, id", left)
            removed = removed or _delete_first(conn, events_table(day), "id", left)
            if removed:
                conn.execute("UPDATE history_days SET bytes = bytes + ? WHERE day = ?",
                             (used_bytes(conn) - before, day))
            else:
                event = Event(DROPPED_KIND, now, "store",
                              f"history of {day_name(day)} dropped ({samples} samples, {events} events): {why}",
                              priority, {"day": day_name(day), "start_ts": day * DAY * 1000,
                                         "end_ts": (day + 1) * DAY * 1000, "samples": samples, "events": events,
                                         "reason": reason, "keep": keeping.keep, "max_bytes": keeping.max_bytes})
                conn.execute(f"DROP TABLE IF EXISTS {samples_table(day)}")
                conn.execute(f"DROP TABLE IF EXISTS {events_table(day)}")
                conn.execute("DELETE FROM history_days WHERE day = ?", (day,))
                conn.execute(f"INSERT INTO outbox (kind, ts, rows, body) VALUES ({EVENT}, ?, 1, ?)",
                             (now, event_body(event)))
                dropped += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        left -= max(removed, 1)
    return dropped


def _delete_first(conn: sqlite3.Connection, table: str, key: str, rows: int) -> int:
    """Delete the first `rows` rows of `table` in `key` order (its primary key): one range of its B-tree."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is None:
        return 0
    bound = conn.execute(f"SELECT {key} FROM {table} ORDER BY {key} LIMIT 1 OFFSET ?", (rows - 1,)).fetchone()
    if bound is None:
        return conn.execute(f"DELETE FROM {table}").rowcount
    return conn.execute(f"DELETE FROM {table} WHERE ({key}) <= ({', '.join('?' * len(bound))})", bound).rowcount
