"""The disk budget: when the outbox outgrows it, thin then evict the oldest samples, and say so upstream.

Policy (DESIGN principle 3), applied by `Store.enforce_budget` after a commit that left the database
over `max_bytes` (the daemon's appends look each time another 1/64 of the budget has been appended, so
the database may pass its budget by that much before it is brought back under):

1. Only samples no batch has carried yet are candidates; events (alarm, bypass, audit, device, gap)
   are never removed, and neither are rows of built batches, whose signed bytes are already stored.
2. With `thinning` seconds configured, the oldest samples are thinned first: of each tag's samples
   in one `thinning`-long window only the first is kept. Thinning walks forward from the oldest row
   and never visits a range twice (`retention.thinned_upto`).
3. When nothing is left to thin, the oldest samples are evicted outright.
4. Every step that removes samples writes, in the same transaction, one `gap` event into the outbox:
   per tag the count and the first and last timestamp removed, the totals, and why. It is a row like
   any other, so it travels upstream in the signed chain; the platform can account for every sample.

Removal goes down to `LOW_WATER` of the budget, so the next few ticks do not each evict again, and a
single call removes at most `MAX_ROWS_PER_CALL` rows, so the scan loop is never held for long; the
next commit continues. Size is counted in pages in use (`page_count - freelist_count`) less the pages
history's days took (`history_bytes`; history has its own bound, store.keeping): pages freed by
deletes are reused by SQLite, so the file itself stays near the two budgets plus the WAL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from core.types import Event, Priority
from store.blocks import pack, unpack
from store.records import SampleBlock

BLOCK = 2
LOW_WATER = 0.9
CHUNK_ROWS = 20_000  # samples looked at per thinning or eviction step
MAX_ROWS_PER_CALL = 100_000
GAP_KIND = "gap"


@dataclass(frozen=True)
class Retention:
    """`max_bytes` None means no budget; `thinning` 0 means evict without thinning first."""

    max_bytes: int | None = None
    thinning: float = 0.0

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {self.max_bytes}")
        if self.thinning < 0:
            raise ValueError(f"thinning must not be negative, not {self.thinning}")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database pages in use; both pragmas read the header, so this is cheap."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def history_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the pages history's days took (counted as they are filled) and of its staged rows."""
    return conn.execute("SELECT (SELECT coalesce(sum(bytes), 0) FROM history_days) + "
                        "(SELECT bytes FROM history_staged_totals)").fetchone()[0]


def outbox_bytes(conn: sqlite3.Connection) -> int:
    """What the outbox's budget counts: pages in use, less history's (which has a bound of its own)."""
    return used_bytes(conn) - history_bytes(conn)


def uncarried_ranges(conn: sqlite3.Connection) -> Iterator[tuple[int, int]]:
    """Id ranges [low, high) of rows in no batch, oldest first.

    Rows up to `chain.carried_upto` are in a batch or acknowledged; above it, only the newest-first
    ("live") batches built during a backfill hold rows, and they are holes in what is left.
    """
    carried = conn.execute("SELECT carried_upto FROM chain").fetchone()[0]
    low = carried + 1
    for first, last in conn.execute(
            "SELECT first_row, last_row FROM batches WHERE first_row > ? ORDER BY first_row", (carried,)).fetchall():
        if first > low:
            yield low, first
        low = max(low, last + 1)
    yield low, 2**62


def enforce(conn: sqlite3.Connection, retention: Retention, names: Callable[[list[int]], dict[int, str]],
            now: float, event_body: Callable[[Event], str]) -> int:
    """Thin and evict until the database is under LOW_WATER of the budget; return the samples removed.

    Runs its own transactions (one per step, each with its gap record). `conn` is in autocommit mode.
    """
    if retention.max_bytes is None or outbox_bytes(conn) <= retention.max_bytes:
        return 0
    target = int(retention.max_bytes * LOW_WATER)
    removed = 0
    while removed < MAX_ROWS_PER_CALL and outbox_bytes(conn) > target:
        step = 0
        if retention.thinning > 0:
            step = _step(conn, retention, names, now, event_body, thin=True)
        if step == 0:
            step = _step(conn, retention, names, now, event_body, thin=False)
        if step == 0:
            break  # only events and carried rows are left: nothing may go
        removed += step
    return removed


def _step(conn: sqlite3.Connection, retention: Retention, names: Callable[[list[int]], dict[int, str]],
          now: float, event_body: Callable[[Event], str], thin: bool) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = _thin(conn, retention, names, now, event_body) if thin else _evict(
            conn, retention, names, now, event_body)
    except BaseException:
        if conn.in_transaction:  # SQLITE_FULL rolls back by itself
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return removed


def _chunk(conn: sqlite3.Connection, low: int, high: int) -> list[tuple[int, bytes]]:
    """Blocks from `low` below `high`, oldest first, until they hold CHUNK_ROWS samples (or there are no more)."""
    heads = conn.execute(f"SELECT id, rows FROM outbox WHERE id >= ? AND id < ? AND kind = {BLOCK} ORDER BY id "
                         "LIMIT ?", (low, high, CHUNK_ROWS)).fetchall()
    total, taken = 0, 0
    while taken < len(heads) and total < CHUNK_ROWS:
        total += heads[taken][1]
        taken += 1
    if not taken:
        return []
    return conn.execute(f"SELECT id, body FROM outbox WHERE id BETWEEN ? AND ? AND kind = {BLOCK} ORDER BY id",
                        (heads[0][0], heads[taken - 1][0])).fetchall()


def _thin(conn, retention, names, now, event_body) -> int:
    """Of each tag's samples in one `thinning`-long window of the next chunk keep the first (in commit order)."""
    thinned_upto = conn.execute("SELECT thinned_upto FROM retention").fetchone()[0]
    for low, high in uncarried_ranges(conn):
        low = max(low, thinned_upto + 1)
        if low >= high:
            continue
        chunk = _chunk(conn, low, high)
        if not chunk:
            continue
        blocks = [unpack(body) for _, body in chunk]
        samples = SampleBlock.concat(blocks)
        windows = np.trunc(samples.ts / retention.thinning).astype(np.int64)  # as SQL's CAST(ts / w AS INTEGER)
        keys = np.empty(len(samples), dtype=[("tag", np.int64), ("window", np.int64)])
        keys["tag"], keys["window"] = samples.tag_id, windows
        keep = np.zeros(len(samples), dtype=bool)
        keep[np.unique(keys, return_index=True)[1]] = True
        removed = _rewrite(conn, chunk, blocks, keep, samples, names, now, event_body, "thinned", retention)
        conn.execute("UPDATE retention SET thinned_upto = ?", (chunk[-1][0],))
        if removed:
            return removed
        thinned_upto = chunk[-1][0]  # this chunk was already sparse: look further in the same transaction
    return 0


def _evict(conn, retention, names, now, event_body) -> int:
    for low, high in uncarried_ranges(conn):
        chunk = _chunk(conn, low, high)
        if chunk:
            blocks = [unpack(body) for _, body in chunk]
            samples = SampleBlock.concat(blocks)
            return _rewrite(conn, chunk, blocks, np.zeros(len(samples), dtype=bool), samples, names, now,
                            event_body, "evicted", retention)
    return 0


def _rewrite(conn, chunk: list[tuple[int, bytes]], blocks: list[SampleBlock], keep: np.ndarray,
             samples: SampleBlock, names, now: float, event_body, action: str, retention: Retention) -> int:
    """Keep only the samples `keep` marks in the chunk's blocks (a block left empty is deleted) and append the
    gap event that accounts for the others."""
    removed = int(len(keep) - keep.sum())
    if not removed:
        return 0
    start = 0
    for (row_id, _), block in zip(chunk, blocks):
        kept = keep[start:start + len(block)]
        start += len(block)
        if kept.all():
            continue
        if not kept.any():
            conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            continue
        left = SampleBlock(*(getattr(block, name)[kept] for name in ("tag_id", "ts", "value", "quality", "source_ts")))
        conn.execute("UPDATE outbox SET ts = ?, rows = ?, body = ? WHERE id = ?",
                     (float(left.ts.min()), len(left), pack(left), row_id))
    per_tag = _per_tag(samples.tag_id[~keep], samples.ts[~keep])
    event = gap_event(now, per_tag, names([tag_id for tag_id, *_ in per_tag]), action,
                      f"store over its disk budget of {retention.max_bytes} bytes", retention.thinning)
    conn.execute("INSERT INTO outbox (kind, ts, rows, body) VALUES (1, ?, 1, ?)", (now, event_body(event)))
    conn.execute("UPDATE retention SET evicted = evicted + ?, gaps = gaps + 1", (removed,))
    return removed


def _per_tag(tag_id: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(tag id, count, first ts, last ts) of each tag among the samples given."""
    tags, index, counts = np.unique(tag_id, return_inverse=True, return_counts=True)
    first = np.full(len(tags), np.inf)
    last = np.full(len(tags), -np.inf)
    np.minimum.at(first, index, ts)
    np.maximum.at(last, index, ts)
    return list(zip(tags.tolist(), counts.tolist(), first.tolist(), last.tolist()))


def gap_event(now: float, per_tag: list[tuple[int, int, float, float]], names: dict[int, str], action: str,
              reason: str, thinning: float = 0.0) -> Event:
    """The record of samples that will never arrive: per tag [count, first ms, last ms], totals, why.

    `per_tag` rows are (tag id, count, first ts, last ts) in Unix seconds.
    """
    total = sum(count for _, count, _, _ in per_tag)
    first = min(low for _, _, low, _ in per_tag)
    last = max(high for _, _, _, high in per_tag)
    tags = {names.get(tag_id, f"#{tag_id}"): [count, round(low * 1000), round(high * 1000)]
            for tag_id, count, low, high in per_tag}
    data = {"action": action, "reason": reason, "samples": total, "first_ts": round(first * 1000),
            "last_ts": round(last * 1000), "tags": tags}
    if action == "thinned":
        data["keep_one_per_seconds"] = thinning
    return Event(GAP_KIND, now, "store", f"{action} {total} samples of {len(tags)} tags: {reason}",
                 Priority.HIGH, data)
