"""Feeding history: every committed outbox row is staged at once; staged blocks become per-tag chunks.

Staging is a trigger on the outbox (`stage_commits`): each row of an event (kind 1) or a block of
samples (kind 2) inserted into the outbox is copied, in the same statement and so the same
transaction, into `history_staged`, keyed by its outbox id. Whatever path commits a row (a scan
tick, a gap record of the disk budget, a `history_dropped` event), history holds it from that commit
on, acknowledged or not, and nothing the outbox does afterwards (acknowledge, evict) touches it. A
tick costs history one more row per block (a couple of rows per tick), not a row per value.

`compact` (after each append, `Store.keep_history`) turns the staged rows into their days' tables
once they span COMPACT_SPAN seconds or take PIECE_BYTES (at 10,000 values a second, every 55 s or so:
chunks of about 50 samples; a tag reporting once a minute, chunks of 10): one transaction takes the
oldest staged rows, at most PIECE_BYTES of them (the first alone when it is larger), so one call never
holds the store for long, even on a backlog staged at an upgrade. It reads and deletes them
PORTION_BYTES at a time, copying each block's columns into the piece's own (allocated once, for
PIECE_BYTES of samples) as it goes, sorts them by day, tag and time on one key, gathers them straight
into the chunks' records (store.chunks), appends one chunk per tag and day keyed (compaction number
<< 32 | tag id), and moves the events into their days' events tables. A crash before its commit
leaves everything staged; after it, everything compacted: nothing is lost or doubled. Its commit is
not synced (synchronous NORMAL): a power cut may undo a compaction, never the commits of the rows it
compacted. Its deletes free the staged rows' pages without zeroing them (the store's secure_delete
FAST, store.outbox: with the ON of Debian's build, zeroing and writing them once more took three times
the CPU of the rest of the delete and commit, to scrub bytes the chunks hold). The pages each day's rows took are
counted into `history_days.bytes` as they are written; staged rows are counted by their length, in
`history_staged_totals` (one row: their bytes, first and last time), which the staging trigger adds
to and each compaction sets from the rows it leaves: the due check after every commit and
store.retention.history_bytes read that row instead of every staged row.

Why pieces of 11 MiB: a compaction costs a row per tag and a commit, whatever its size, besides its
per-sample work. At 10,000 tags every second history's upkeep took 0.53 CPU-s per million values in
pieces of 4 MiB of 33-byte samples (with a scrubbing delete at the end and every column copied twice),
0.40 in pieces of 4 MiB as now, 0.25-0.27 in pieces of 16 MiB (508,000 samples); a compaction's memory
is about 50 bytes a sample (its columns 25, the sort's order 8, the chunks' records 13-17): 27 MiB at
its peak. Blocks of version 2 take 21 bytes a sample (store.blocks): 11 MiB holds about as many
samples as 16 MiB did.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from store import blocks, chunks
from store.history import BLOCK, CHUNK_KEY, DAY, EVENT, chunks_table, day_of, events_table
from store.keeping import Keeping, create_day, expired
from store.retention import used_bytes

COMPACT_SPAN = 600.0  # seconds of gateway time the staged rows span before they are compacted
PIECE_BYTES = 11 << 20  # staged bytes compacted at most per transaction (about 550,000 samples of 21 bytes)
PORTION_BYTES = 1 << 20  # staged bytes read, then deleted, at a time: under SQLite's page cache (2 MiB)
TRIGGER = "history_staging"


def stage_commits(conn: sqlite3.Connection, on: bool) -> None:
    """Stage every event and block committed into the outbox from now on (`on`), or stop staging (keep 0).

    The trigger also adds each row into `history_staged_totals` (its length and time), so that the due
    check after every commit reads one row, not every staged row.
    """
    if on:
        conn.execute(f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON outbox "
                     f"WHEN NEW.kind IN ({EVENT}, {BLOCK}) BEGIN "
                     "INSERT INTO history_staged (id, kind, ts, body) VALUES (NEW.id, NEW.kind, NEW.ts, NEW.body); "
                     "UPDATE history_staged_totals SET bytes = bytes + length(NEW.body), "
                     "first_ts = min(coalesce(first_ts, NEW.ts), NEW.ts), "
                     "last_ts = max(coalesce(last_ts, NEW.ts), NEW.ts); "
                     "END")
    else:
        conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


def count_staged(conn: sqlite3.Connection) -> None:
    """Set `history_staged_totals` from the staged rows themselves: their bytes (as length() counts
    them) and their first and last time (NULL when none is staged). At the migration that made it,
    and by each compaction for the rows it leaves."""
    conn.execute("UPDATE history_staged_totals SET (bytes, first_ts, last_ts) = "
                 "(SELECT coalesce(sum(length(body)), 0), min(ts), max(ts) FROM history_staged)")


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
    size, first, last = conn.execute("SELECT bytes, first_ts, last_ts FROM history_staged_totals").fetchone()
    if first is None or not (force or last - first >= COMPACT_SPAN or size >= PIECE_BYTES):
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
    piece = _take_staged(conn)
    count_staged(conn)
    if keeping.keep > 0:
        _append_days(conn, piece, keeping, now)
    return piece.samples + len(piece.events)


class _Piece:
    """The staged rows one compaction takes: their samples copied block by block into columns allocated
    once (each block's bytes are let go as soon as copied, so a piece costs its columns, not its rows and
    copies of them), and their events as rows.

    `key` is what the chunks are cut by, day << 32 | tag id (the day truncated as day_of is); `source_ts`
    is None while no block taken has a device time (a Modbus tag never has one). `key` holds the tag
    ids until the piece is sorted.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.events: list[tuple] = []
        self.key, self.ts, self.value = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        self.quality = np.zeros(0, np.uint8)
        self.source_ts: np.ndarray | None = None

    def add_block(self, body: bytes) -> None:
        columns = blocks.columns(body)
        start, end = self.samples, self.samples + len(columns["ts"])
        if end > len(self.key):  # the first block (the take keeps the rest within PIECE_BYTES)
            size = max(PIECE_BYTES // blocks.MIN_BYTES_PER_SAMPLE, end)
            self.key, self.ts, self.value = np.empty(size, np.int64), np.empty(size), np.empty(size)
            self.quality = np.empty(size, np.uint8)
        self.key[start:end] = columns["tag_id"]  # the day is put in for the whole piece at once
        self.ts[start:end], self.value[start:end] = columns["ts"], columns["value"]
        self.quality[start:end] = columns["quality"]
        device_times = columns.get("source_ts")  # a version 2 block without device times has none
        if device_times is not None and (self.source_ts is not None or not np.isnan(device_times).all()):
            if self.source_ts is None:
                self.source_ts = np.full(len(self.key), np.nan)
            self.source_ts[start:end] = device_times  # rows of blocks without device times stay NaN
        self.samples = end


def _take_staged(conn: sqlite3.Connection) -> _Piece:
    """The oldest staged rows, at most PIECE_BYTES of them (or the first alone when larger), deleted as taken.

    They are read and deleted PORTION_BYTES at a time: deleting a row frees its overflow pages, which
    SQLite reads to follow the chain; right after they were read they are still in its page cache.
    """
    piece, taken, last_id, more = _Piece(), 0, 0, True
    while more:
        more, portion = False, 0
        cursor = conn.execute("SELECT id, kind, ts, body FROM history_staged WHERE id > ? ORDER BY id", (last_id,))
        for row_id, kind, ts, body in cursor:
            if taken and taken + len(body) > PIECE_BYTES:
                break
            if kind == BLOCK:
                piece.add_block(body)
            else:
                piece.events.append((row_id, ts, body))
            last_id, taken, portion = row_id, taken + len(body), portion + len(body)
            if portion >= PORTION_BYTES:
                more = True
                break
        cursor.close()
        conn.execute("DELETE FROM history_staged WHERE id <= ?", (last_id,))
    return piece


def _append_days(conn: sqlite3.Connection, piece: _Piece, keeping: Keeping, now: float) -> None:
    """One chunk per day and tag of the piece's samples (sorted by day, tag, time; ties in commit order) and
    its events, into their days' tables; days past `keeping.keep` are left out."""
    count = piece.samples
    ts, key = piece.ts[:count], piece.key[:count]
    first_ts, last_ts = (float(ts.min()), float(ts.max())) if count else (0.0, 0.0)
    if day_of(first_ts) == day_of(last_ts):  # one day (nearly always): no division of every sample
        key |= day_of(first_ts) << 32
    else:
        day = (ts / DAY).astype(np.int64)  # truncated as day_of is
        day <<= 32
        key |= day
        del day
    order = np.lexsort((ts, key))
    keys = key[order]
    del key
    piece.key = None  # let go before the records are made
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = np.concatenate(([0], cuts, [count])) if count else np.zeros(1, np.int64)
    chunk_day, chunk_tag = keys[bounds[:-1]] >> 32, keys[bounds[:-1]] & (CHUNK_KEY - 1)
    del keys
    source_ts = None if piece.source_ts is None else piece.source_ts[:count]
    layouts, bodies = chunks.pack_groups(order, ts, piece.value[:count], piece.quality[:count], source_ts, bounds)
    compaction = None
    if count:
        compaction = conn.execute("INSERT INTO history_compactions (first_ts, last_ts) VALUES (?, ?)",
                                  (first_ts, last_ts)).lastrowid
    event_days = [day_of(ts) for _, ts, _ in piece.events]
    for this_day in sorted(set(chunk_day.tolist()) | set(event_days)):
        if expired(this_day, keeping, now):
            continue
        made = create_day(conn, this_day)
        before = used_bytes(conn)
        low, high = np.searchsorted(chunk_day, this_day, "left"), np.searchsorted(chunk_day, this_day, "right")
        conn.executemany(f"INSERT INTO {chunks_table(this_day)} (id, layout, body) VALUES (?, ?, ?)",
                         zip((chunk_tag[low:high] + compaction * CHUNK_KEY).tolist() if high > low else [],
                             layouts[low:high], bodies[low:high]))
        day_events = [event for event, event_day in zip(piece.events, event_days) if event_day == this_day]
        conn.executemany(f"INSERT INTO {events_table(this_day)} (id, ts, body) VALUES (?, ?, ?)", day_events)
        conn.execute("UPDATE history_days SET samples = samples + ?, events = events + ?, bytes = bytes + ? "
                     "WHERE day = ?", (int(bounds[high] - bounds[low]), len(day_events),
                                       made + used_bytes(conn) - before, this_day))
