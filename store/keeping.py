"""Keeping history: how long and how much, and dropping the oldest day first.

What is kept is fed by store.compaction (every committed row staged, then compacted into its day's
tables). `drop_days` (after each append's compaction, and at open) drops the oldest day while it ended
more than `keep` ago or while history (its days and the staged rows) takes more than `max_bytes`: at
most DROP_ROWS rows of a per-sample day table (kept by gatewayd before chunks) or DROP_ROWS / CHUNK_WEIGHT
chunks per call, in key order (a range of the B-tree each time), so a day of any size never holds the store for
long (a DROP TABLE of a 1.5-million-row day took 2 s on the development machine); the step that empties
the day drops its tables and writes, in the same transaction, a `history_dropped` event into the outbox,
which travels upstream like any other (and is itself kept in history).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from core.types import Event, Priority
from store.history import DAY, EVENT, chunks_table, day_name, events_table, samples_table
from store.retention import history_bytes, used_bytes

KEEP = 30 * DAY  # MEM Order No. 40: records of major hazard sources kept at least 30 days
MAX_BYTES = 4 << 30
DROPPED_KIND = "history_dropped"
# bytes a sample takes in history, tables and B-tree pages included: bench/bench_history.py measured 18.8
# (1,000 tags reporting once a minute, chunks of 10 samples; 18.7 for 10,000 tags every second); a device
# timestamp adds 8: rounded up for those. Values a float32 holds exactly (unscaled registers, digital states)
# take 4 less: 13.6 for 10,000 such tags every second
BYTES_PER_SAMPLE = 27
DROP_ROWS = 20_000  # rows of an old day's per-sample table (or events) deleted per call of drop_days
CHUNK_WEIGHT = 10  # a chunk counts as this many rows of a step: 2,000 chunks a call (bench_history: its longest step)


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


def expired(day: int, keeping: Keeping, now: float) -> bool:
    """Whether `day` ended more than `keep` ago (its rows are not kept: drop_days would drop them at once)."""
    return (day + 1) * DAY <= now - keeping.keep


def create_day(conn: sqlite3.Connection, day: int) -> int:
    """List `day` in history_days and create its tables, unless they are there; return the bytes of the
    tables' first pages it made (the pages the schema's own table may take for their entries are not
    history's: they are counted as the outbox's)."""
    conn.execute("INSERT OR IGNORE INTO history_days VALUES (?, 0, 0, 0)", (day,))
    made = 0
    for table, columns in ((chunks_table(day), "layout INTEGER NOT NULL, body BLOB NOT NULL"),
                           (events_table(day), "ts REAL NOT NULL, body TEXT NOT NULL")):
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is None:
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {columns})")
            made += conn.execute("PRAGMA page_size").fetchone()[0]
    return made


def drop_days(conn: sqlite3.Connection, keeping: Keeping, now: float, event_body: Callable[[Event], str],
              max_rows: int = DROP_ROWS) -> int:
    """Drop the oldest day while it is past `keep` or the days exceed `max_bytes`; return the days dropped.

    A day goes in steps of at most `max_rows` rows in all per call (a chunk counting CHUNK_WEIGHT rows), each
    step one transaction of its own (`conn` is in autocommit mode), so no call holds the store for long
    whatever a day holds; the next call goes on where this one stopped. The step that finds the day's
    tables empty drops them, removes its catalog row and writes its `history_dropped` event, in one
    transaction.
    """
    dropped, left = 0, max_rows
    while left > 0:
        days = conn.execute("SELECT day, samples, events, bytes FROM history_days ORDER BY day").fetchall()
        if not days:
            break
        day, samples, events, _ = days[0]
        if expired(day, keeping, now):
            reason, why, priority = "keep", f"older than history.keep ({keeping.keep:g} s)", Priority.INFO
        elif history_bytes(conn) > keeping.max_bytes:
            reason, why, priority = "max_bytes", f"history over history.max_bytes ({keeping.max_bytes} bytes)", \
                Priority.MEDIUM
        else:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = used_bytes(conn)
            removed = _delete_first(conn, samples_table(day), "tag_id, ts, id", left)
            removed = removed or CHUNK_WEIGHT * _delete_first(conn, chunks_table(day), "id",
                                                              max(left // CHUNK_WEIGHT, 1))
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
                for table in (samples_table(day), chunks_table(day), events_table(day)):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("DELETE FROM history_days WHERE day = ?", (day,))
                conn.execute("DELETE FROM history_compactions WHERE last_ts < ?", ((day + 1) * DAY,))
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
