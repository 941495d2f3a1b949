"""The outbox: samples and events wait here, in commit order, until upstream acknowledges them.

SQLite is the truth (DESIGN principle 2): a row counts as accepted once `append` commits and is
deleted only by `acknowledge`. A tick's samples are stored as blocks of at most `block_samples` (one row
each, store.blocks), events one row each; a batch carries whole rows. A batch is stored with its exact
envelope bytes and the chain head is advanced in the same transaction, so a seq is never reused or
rolled back, and a batch that was built but not acknowledged before a crash is republished byte for byte.

Durability: with `synchronous="normal"` a commit of samples only may be lost to a power cut (WAL
frames not yet synced); a commit that carries events is always made with synchronous FULL, so an
alarm, bypass or audit record that was accepted survives one. See docs/reliability.md.

During a backfill the publisher interleaves batches of the newest rows (`build_batch(newest=True)`)
with batches of the oldest: rows above `chain.carried_upto` may then already sit in such a batch,
and `store.retention.uncarried_ranges` gives what is left.

One Store is used from one thread at a time (the daemon's loop, possibly through a worker
thread); it is not safe for concurrent use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import numpy as np

from core.types import Event
from store.blocks import pack, split, unpack
from store.records import Batch, BatchContent, ChainHead, SampleBlock, StoreStats, event_body, event_from_row
from store.compaction import compact, stage_commits
from store.keeping import Keeping, drop_days
from store.retention import Retention, enforce, history_bytes, outbox_bytes, uncarried_ranges
from store.schema import migrate

log = logging.getLogger("gatewayd.store")

EVENT, BLOCK = 1, 2
SYNCHRONOUS = ("full", "normal")
BUDGET_STEP = 64  # the disk budget is enforced after each 1/64 of it appended: 16 MiB of the default 1 GiB
BLOCK_SAMPLES = 1000  # samples per outbox row at most: small enough to fill batches, large enough to cost nothing

MakeEnvelope = Callable[[BatchContent, int, bytes], bytes]


class Store:
    """Open with `Store.open(path)`; see the module docstring for the guarantees."""

    def __init__(self, conn: sqlite3.Connection, path: Path, synchronous: str = "full",
                 retention: Retention | None = None, keeping: Keeping | None = None,
                 block_samples: int = BLOCK_SAMPLES) -> None:
        if block_samples < 1:
            raise ValueError(f"block_samples must be at least 1, not {block_samples}")
        self._conn = conn
        self.path = path
        self.synchronous = synchronous
        self.retention = retention or Retention()
        self.keeping = keeping or Keeping()
        self.block_samples = block_samples
        self._appended = float("inf")  # bytes appended since the disk budget was last enforced
        self._names: dict[int, str] | None = None  # tag id -> name, filled on first use
        self._names_view: Mapping[int, str] | None = None  # read-only, handed to every batch

    @classmethod
    def open(cls, path: Path, synchronous: str = "full", retention: Retention | None = None,
             keeping: Keeping | None = None, block_samples: int = BLOCK_SAMPLES) -> Store:
        """Open or create the database (parent directory 0700, file 0600), migrate it, drop history past its keep.

        `block_samples` should not exceed the uplink's batch_max_rows: a batch carries whole blocks.
        """
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
        path = Path(path)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # Some builds (Debian's) default to ON, which overwrites every page a delete frees with zeros: an
        # acknowledged batch's blocks and envelope were written once more as zeros, a third of the WAL's
        # writes. What is deleted is sent and kept in history; FAST zeroes it where that costs no I/O.
        conn.execute("PRAGMA secure_delete = FAST")
        migrate(conn)
        store = cls(conn, path, synchronous, retention, keeping, block_samples)
        stage_commits(conn, store.keeping.keep > 0)
        store.drop_history()
        return store

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _synchronous(self, level: str) -> Iterator[None]:
        """Commit the transactions inside at `level` ("full" or "normal") instead of the store's own setting."""
        if level == self.synchronous:
            yield
            return
        self._conn.execute(f"PRAGMA synchronous = {level.upper()}")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back by themselves
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def tag_ids(self, names: Sequence[str]) -> np.ndarray:
        """Stable int64 ids for tag names, registering names not seen before.

        Ids belong to names, not to positions in the config, so reordering the config never
        relabels stored samples.
        """
        with self._transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO tags (name) VALUES (?)", ((n,) for n in names))
            known = dict(conn.execute("SELECT name, id FROM tags"))
        self._names = {tag_id: name for name, tag_id in known.items()}
        self._names_view = None
        return np.array([known[n] for n in names], dtype=np.int64)

    def tag_names(self, ids) -> dict[int, str]:
        """Names of the given tag ids (unknown ids are left out)."""
        names = self._all_names()
        return {tag_id: names[tag_id] for tag_id in np.unique(np.asarray(ids, dtype=np.int64)).tolist()
                if tag_id in names}

    def _all_names(self) -> Mapping[int, str]:
        """Every tag's name by id, read-only, served from memory: every batch needs its tags' names. The
        same object until new tags are registered, so that an encoder may keep what it made of them."""
        if self._names is None:
            self._names = {tag_id: name for tag_id, name in self._conn.execute("SELECT id, name FROM tags")}
        if self._names_view is None:
            self._names_view = MappingProxyType(self._names)
        return self._names_view

    def append(self, samples: SampleBlock | None, events: Sequence[Event]) -> None:
        """Commit one scan tick's samples, then its events, in a single transaction; then keep the budget and
        history (its compaction when due, its oldest days past their keep or bound).

        Raises sqlite3.Error (see `is_disk_full`) with nothing committed when the disk is full.
        """
        with self._synchronous("full" if events else self.synchronous):
            self._insert(samples, events)
        for step, what in ((self._keep_budget, "evict for the disk budget"), (self.keep_history, "keep history")):
            try:
                step()
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                # the tick is committed; the step is retried after the next one
                log.warning("could not %s: %s", what, exc)

    def _keep_budget(self) -> None:
        """`enforce_budget` once every BUDGET_STEP of the budget has been appended since it last ran (and at the
        first append): measuring the database takes a few statements, more than a tick's insert."""
        budget = self.retention.max_bytes
        if budget is not None and self._appended >= budget / BUDGET_STEP:
            self.enforce_budget()
            self._appended = 0

    def enforce_budget(self) -> int:
        """Thin and evict the oldest samples while over the disk budget; return how many went."""
        if self.retention.max_bytes is None:
            return 0
        return enforce(self._conn, self.retention, self.tag_names, time.time(), event_body)

    def used_bytes(self) -> int:
        """Bytes in database pages in use but history's: what the disk budget counts."""
        return outbox_bytes(self._conn)

    def keep_history(self) -> None:
        """Compact the rows staged for history when due, then drop its oldest days past their keep or bound."""
        compact(self._conn, self.keeping, time.time())
        self.drop_history()

    def drop_history(self) -> int:
        """Drop the oldest days of history past `keeping.keep` or over `keeping.max_bytes`; return how many."""
        return drop_days(self._conn, self.keeping, time.time(), event_body)

    def _insert(self, samples: SampleBlock | None, events: Sequence[Event]) -> None:
        blocks = split(samples, self.block_samples) if samples is not None else []
        rows = [(BLOCK, float(block.ts.min()), len(block), pack(block)) for block in blocks]
        rows += [(EVENT, float(event.ts), 1, event_body(event)) for event in events]
        with self._transaction() as conn:
            conn.executemany("INSERT INTO outbox (kind, ts, rows, body) VALUES (?, ?, ?, ?)", rows)
        self._appended += sum(len(row[3]) for row in rows)

    def build_batch(self, max_rows: int, make: MakeEnvelope, newest: bool = False) -> Batch | None:
        """Take the oldest rows no batch carries yet, have `make` encode them, store the batch.

        A batch carries whole outbox rows, as many as fit in `max_rows` samples and events (a single row
        that holds more, a block stored under a larger batch_max_rows, goes alone).
        `make(content, seq, prev_hash)` returns the envelope bytes; it runs inside the
        transaction, so if it raises nothing is consumed. Returns None when no row waits.
        Publish the batch only after this returns: then it is on disk.

        `newest=True` takes the newest rows instead (live data during a backfill). Either way the
        rows of one batch are consecutive in commit order and seq numbers follow build order.
        """
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        with self._transaction() as conn:
            last_seq, last_hash, carried = conn.execute(
                "SELECT last_seq, last_hash, carried_upto FROM chain"
            ).fetchone()
            taken = _take(conn, list(uncarried_ranges(conn)), max_rows, newest)
            if taken is None:
                return None
            first, last, count = taken
            older = conn.execute(
                "SELECT 1 FROM outbox WHERE id > ? AND id < ? LIMIT 1", (carried, first)).fetchone()
            if older is None:
                carried = last  # nothing older waits below this batch
            content = self._content(conn.execute(
                "SELECT kind, ts, body FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id", (first, last)))
            seq = last_seq + 1
            envelope = bytes(make(content, seq, bytes(last_hash)))
            digest = hashlib.sha256(envelope).digest()
            batch = Batch(seq, envelope, digest, first, last, count)
            conn.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, batch.first_row, batch.last_row, batch.rows, envelope, digest, time.time()),
            )
            conn.execute(
                "UPDATE chain SET last_seq = ?, last_hash = ?, carried_upto = ?",
                (seq, digest, carried),
            )
        return batch

    def _content(self, rows: Iterable[tuple]) -> BatchContent:
        blocks, events = [], []
        for kind, ts, body in rows:
            if kind == BLOCK:
                blocks.append(unpack(body))
            else:
                events.append(event_from_row(ts, body))
        block = SampleBlock.concat(blocks) if blocks else SampleBlock.empty()
        return BatchContent(block, self._all_names(), events)

    def chain_head(self) -> ChainHead:
        """The epoch, the last seq and hash built in it, and the reset that began it."""
        epoch, seq, digest, reset = self._conn.execute("SELECT epoch, last_seq, last_hash, reset FROM chain").fetchone()
        return ChainHead(None if epoch is None else bytes(epoch), seq, bytes(digest), reset)

    def begin_epoch(self, epoch: bytes, reset: str) -> None:
        """Begin a new chain: seq 1 of `epoch` comes next, carrying the chain_reset `reset` (JSON).

        Batches built before and not acknowledged are forgotten (their seqs belong to the old epoch), and the
        rows they carried wait for a batch again: every row still here travels in the new epoch.
        """
        with self._transaction() as conn:
            oldest = conn.execute("SELECT min(id) FROM outbox").fetchone()[0]
            conn.execute("DELETE FROM batches")
            conn.execute("UPDATE chain SET epoch = ?, reset = ?, last_seq = 0, last_hash = zeroblob(32), "
                         "carried_upto = coalesce(?, carried_upto)", (epoch, reset, oldest and oldest - 1))

    def pending_batches(self) -> list[Batch]:
        """Batches built but not acknowledged, by seq: republish these after a restart."""
        rows = self._conn.execute(
            "SELECT seq, envelope, digest, first_row, last_row, rows FROM batches ORDER BY seq"
        )
        return [Batch(seq, bytes(env), bytes(dig), f, la, n) for seq, env, dig, f, la, n in rows]

    def acknowledge(self, seq: int) -> int:
        """Delete the rows batch `seq` carried, and the batch; return the rows (0 if already done).

        History has had them since their commit (store.compaction). The delete is committed without waiting
        for the disk (synchronous NORMAL, one fsync less per batch): a power cut may undo it, and the batch then goes
        again under its seq, byte for byte, which receivers drop as a duplicate.
        """
        with self._synchronous("normal"), self._transaction() as conn:
            found = conn.execute(
                "SELECT first_row, last_row, rows FROM batches WHERE seq = ?", (seq,)
            ).fetchone()
            if found is None:
                return 0
            first, last, rows = found
            conn.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, last))
            conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
        return rows

    def stats(self) -> StoreStats:
        conn = self._conn
        last_seq = conn.execute("SELECT last_seq FROM chain").fetchone()[0]
        pending = sum(conn.execute("SELECT coalesce(sum(rows), 0) FROM outbox WHERE id >= ? AND id < ?",
                                   bounds).fetchone()[0] for bounds in uncarried_ranges(conn))
        inflight = conn.execute("SELECT coalesce(sum(rows), 0) FROM outbox").fetchone()[0] - pending
        evicted, gaps = conn.execute("SELECT evicted, gaps FROM retention").fetchone()
        batches = conn.execute("SELECT count(*) FROM batches").fetchone()[0]
        oldest = conn.execute("SELECT ts FROM outbox ORDER BY id LIMIT 1").fetchone()
        return StoreStats(
            rows_pending=pending,
            rows_inflight=inflight,
            batches_pending=batches,
            oldest_pending_ts=oldest[0] if oldest else None,
            db_bytes=_db_bytes(self.path),
            last_seq=last_seq,
            used_bytes=outbox_bytes(conn),
            history_bytes=history_bytes(conn),
            history_days=conn.execute("SELECT count(*) FROM history_days").fetchone()[0],
            evicted=evicted,
            gap_records=gaps,
        )

    def save_state(self, name: str, body: str) -> None:
        """Replace the JSON document `name` (e.g. "rules": the rule engine's state) in one commit."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO state (name, body, saved_at) VALUES (?, ?, ?)",
                         (name, body, time.time()))

    def load_state(self, name: str) -> str | None:
        """The JSON document saved as `name`, or None if there is none."""
        row = self._conn.execute("SELECT body FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]


def _take(conn: sqlite3.Connection, ranges: list[tuple[int, int]], max_rows: int,
          newest: bool) -> tuple[int, int, int] | None:
    """First id, last id and rows of the next batch: consecutive rows of the oldest range with rows (or of the
    newest range, from its end) adding up to at most `max_rows`, at least one row. Reads no BLOB."""
    if newest:
        low, high = ranges[-1]
        heads = conn.execute("SELECT id, rows FROM outbox WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?",
                             (low, high, max_rows)).fetchall()
    else:
        heads = []
        for low, high in ranges:
            heads = conn.execute("SELECT id, rows FROM outbox WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                 (low, high, max_rows)).fetchall()
            if heads:
                break
    if not heads:
        return None
    count, taken = heads[0][1], 1
    while taken < len(heads) and count + heads[taken][1] <= max_rows:
        count += heads[taken][1]
        taken += 1
    ends = (heads[0][0], heads[taken - 1][0])
    return min(ends), max(ends), count


def read_state(path: Path, name: str) -> str | None:
    """The JSON document `name` of the database at `path`, read without writing (its daemon may be running);
    None when there is none, or no such database."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT body FROM state WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None if row is None else row[0]


SQLITE_FULL, SQLITE_IOERR = 13, 10


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full or failing disk gives (SQLITE_FULL, SQLITE_IOERR and its variants)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)
    return isinstance(exc, sqlite3.OperationalError) and (
        "disk is full" in str(exc) or "disk I/O error" in str(exc))


def _db_bytes(path: Path) -> int:
    """Database plus WAL on disk: what counts against a disk budget."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total
