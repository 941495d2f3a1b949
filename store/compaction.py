"""Feeding history: every committed outbox row is staged at once; staged blocks become per-tag chunks.

Staging is a trigger on the outbox (`stage_commits`): each row of an event (kind 1) or a block of
samples (kind 2) inserted into the outbox is copied, in the same statement and so the same
transaction, into `history_staged`, keyed by its outbox id. Whatever path commits a row (a scan
tick, a gap record of the disk budget, a `history_dropped` event), history holds it from that commit
on, acknowledged or not, and nothing the outbox does afterwards (acknowledge, evict) touches it. A
tick costs history one more row per block (a couple of rows per tick), not a row per value.

`compact` (after each append, `Store.keep_history`) turns the staged rows into their days' tables
once they span COMPACT_SPAN seconds or take PIECE_BYTES (at 10,000 values a second, every 13 s or so:
chunks of about 12 samples; a tag reporting once a minute, chunks of 10): one transaction reads the oldest staged rows
(at most about PIECE_BYTES of them, so one call never holds the store for long, even on a backlog
staged at an upgrade), cuts the samples by UTC day and tag, appends one chunk per tag and day
(store.chunks) keyed (compaction number << 32 | tag id), moves the events into their days' events
tables, and deletes what it read. A crash before its commit leaves everything staged; after it,
everything compacted: nothing is lost or doubled. Its commit is not synced (synchronous NORMAL): a
power cut may undo a compaction, never the commits of the rows it compacted. The pages each day's
rows took are counted into `history_days.bytes` as they are written; staged rows are counted by their
length (store.retention.history_bytes).
"""

from __future__ import annotations

import sqlite3

import numpy as np

from store import blocks, chunks
from store.history import BLOCK, CHUNK_KEY, DAY, EVENT, chunks_table, day_of, events_table
from store.keeping import Keeping, create_day, expired
from store.records import SampleBlock
from store.retention import used_bytes

COMPACT_SPAN = 600.0  # seconds of gateway time the staged rows span before they are compacted
PIECE_BYTES = 4 << 20  # staged bytes compacted at most per transaction (about 127,000 samples)
TRIGGER = "history_staging"


def stage_commits(conn: sqlite3.Connection, on: bool) -> None:
    """Stage every event and block committed into the outbox from now on (`on`), or stop staging (keep 0)."""
    if on:
        conn.execute(f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON outbox "
                     f"WHEN NEW.kind IN ({EVENT}, {BLOCK}) BEGIN "
                     "INSERT INTO history_staged (id, kind, ts, body) VALUES (NEW.id, NEW.kind, NEW.ts, NEW.body); "
                     "END")
    else:
        conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


def stage_waiting(conn: sqlite3.Connection) -> None:
    """Stage the rows waiting in the outbox (at the upgrade to staged history: the previous gatewayd copied
    rows into history only when acknowledged; migration 0006 has made its waiting samples blocks)."""
    conn.execute(f"INSERT INTO history_staged (id, kind, ts, body) SELECT id, kind, ts, body FROM outbox "
                 f"WHERE kind IN ({EVENT}, {BLOCK})")


def compact(conn: sqlite3.Connection, keeping: Keeping, now: float, force: bool = False) -> int:
    """Compact the oldest staged rows when due (or with `force`); return the rows compacted (samples and events).

    Runs its own transaction; `conn` is in autocommit mode. With `keeping.keep` 0 the staged rows are
    deleted unkept.
    """
    rows, first, last, size = conn.execute(
        "SELECT count(*), min(ts), max(ts), coalesce(sum(length(body)), 0) FROM history_staged").fetchone()
    if not rows or not (force or last - first >= COMPACT_SPAN or size >= PIECE_BYTES):
        return 0
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute("PRAGMA synchronous = NORMAL")  # a compaction lost to a power cut leaves its rows staged
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = _compact_piece(conn, keeping, now)
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL rolls back by itself
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    return done


def _compact_piece(conn: sqlite3.Connection, keeping: Keeping, now: float) -> int:
    samples, events, last_id = _take_staged(conn)
    conn.execute("DELETE FROM history_staged WHERE id <= ?", (last_id,))
    if keeping.keep > 0:
        _append_days(conn, samples, events, keeping, now)
    return len(samples) + len(events)


def _take_staged(conn: sqlite3.Connection) -> tuple[SampleBlock, list[tuple], int]:
    """The oldest staged rows, about PIECE_BYTES of them: their samples as one block (the rows' own bytes are
    let go on return, before the compaction's copies are made), their events, and the last row's id."""
    taken, events, parts, last_id = 0, [], [], 0
    cursor = conn.execute("SELECT id, kind, ts, body FROM history_staged ORDER BY id")
    for row_id, kind, ts, body in cursor:
        if kind == BLOCK:
            parts.append(blocks.unpack(body))
        else:
            events.append((row_id, ts, body))
        last_id, taken = row_id, taken + len(body)
        if taken >= PIECE_BYTES:
            break
    cursor.close()
    return (SampleBlock.concat(parts) if parts else SampleBlock.empty()), events, last_id


def _append_days(conn: sqlite3.Connection, samples: SampleBlock, events: list[tuple], keeping: Keeping,
                 now: float) -> None:
    """One chunk per day and tag of `samples` (commit order, stably sorted by day, tag, time) and the
    events, into their days' tables; days past `keeping.keep` are left out."""
    day = (samples.ts / DAY).astype(np.int64)  # truncated as day_of is
    order = np.lexsort((samples.ts, samples.tag_id, day))
    day, tag_id = day[order], samples.tag_id[order]
    cuts = np.flatnonzero((day[1:] != day[:-1]) | (tag_id[1:] != tag_id[:-1])) + 1
    bounds = np.concatenate(([0], cuts, [len(order)])) if len(order) else np.zeros(1, np.int64)
    layouts, bodies = chunks.pack_groups(samples.ts[order], samples.value[order], samples.quality[order],
                                         samples.source_ts[order], bounds)
    chunk_day, chunk_tag = day[bounds[:-1]], tag_id[bounds[:-1]]
    compaction = None
    if len(order):
        compaction = conn.execute("INSERT INTO history_compactions (first_ts, last_ts) VALUES (?, ?)",
                                  (float(samples.ts.min()), float(samples.ts.max()))).lastrowid
    event_days = [day_of(ts) for _, ts, _ in events]
    for this_day in sorted(set(chunk_day.tolist()) | set(event_days)):
        if expired(this_day, keeping, now):
            continue
        before = used_bytes(conn)
        create_day(conn, this_day)
        low, high = np.searchsorted(chunk_day, this_day, "left"), np.searchsorted(chunk_day, this_day, "right")
        conn.executemany(f"INSERT INTO {chunks_table(this_day)} (id, layout, body) VALUES (?, ?, ?)",
                         zip((chunk_tag[low:high] + compaction * CHUNK_KEY).tolist() if high > low else [],
                             layouts[low:high], bodies[low:high]))
        day_events = [event for event, event_day in zip(events, event_days) if event_day == this_day]
        conn.executemany(f"INSERT INTO {events_table(this_day)} (id, ts, body) VALUES (?, ?, ?)", day_events)
        conn.execute("UPDATE history_days SET samples = samples + ?, events = events + ?, bytes = bytes + ? "
                     "WHERE day = ?", (int(bounds[high] - bounds[low]), len(day_events),
                                       used_bytes(conn) - before, this_day))
