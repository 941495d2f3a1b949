"""The outbox: samples and events wait here, in commit order, until upstream acknowledges them.

SQLite is the truth (DESIGN principle 2): a row counts as accepted once `append` commits and is
deleted only by `acknowledge`. A batch is stored with its exact envelope bytes and the chain head
is advanced in the same transaction, so a seq is never reused or rolled back, and a batch that was
built but not acknowledged before a crash is republished byte for byte.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.types import Event
from store.records import Batch, BatchContent, ChainHead, SampleBlock, StoreStats, event_body, event_from_row
from store.keeping import Keeping, drop_days, keep_rows
from store.retention import Retention, enforce, history_bytes, outbox_bytes, uncarried_ranges
from store.schema import migrate

log = logging.getLogger("gatewayd.store")

SAMPLE, EVENT = 0, 1
SYNCHRONOUS = ("full", "normal")

MakeEnvelope = Callable[[BatchContent, int, bytes], bytes]


class Store:
    """Open with `Store.open(path)`; see the module docstring for the guarantees."""

    def __init__(self, conn: sqlite3.Connection, path: Path, synchronous: str = "full",
                 retention: Retention | None = None, keeping: Keeping | None = None) -> None:
        self._conn = conn
        self.path = path
        self.synchronous = synchronous
        self.retention = retention or Retention()
        self.keeping = keeping or Keeping()
        self._names: dict[int, str] | None = None  # tag id -> name, filled on first use

    @classmethod
    def open(cls, path: Path, synchronous: str = "full", retention: Retention | None = None,
             keeping: Keeping | None = None) -> Store:
        """Open or create the database (parent directory 0700, file 0600), migrate it, drop history past its keep."""
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
        migrate(conn)
        store = cls(conn, path, synchronous, retention, keeping)
        store.drop_history()
        return store

    def close(self) -> None:
        self._conn.close()

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
        return np.array([known[n] for n in names], dtype=np.int64)

    def tag_names(self, ids) -> dict[int, str]:
        """Names of the given tag ids (unknown ids are left out). Served from memory: every batch asks."""
        if self._names is None:
            self._names = {tag_id: name for tag_id, name in self._conn.execute("SELECT id, name FROM tags")}
        names = self._names
        return {tag_id: names[tag_id] for tag_id in np.unique(np.asarray(ids, dtype=np.int64)).tolist()
                if tag_id in names}

    def append(self, samples: SampleBlock | None, events: Sequence[Event]) -> None:
        """Commit one scan tick's samples, then its events, in a single transaction; then keep the budget.

        Raises sqlite3.Error (see `is_disk_full`) with nothing committed when the disk is full.
        """
        durable = bool(events) and self.synchronous != "full"
        if durable:
            self._conn.execute("PRAGMA synchronous = FULL")
        try:
            self._insert(samples, events)
        finally:
            if durable:
                self._conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        try:
            self.enforce_budget()
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            # the tick is committed; eviction is retried after the next one
            log.warning("could not evict for the disk budget: %s", exc)

    def enforce_budget(self) -> int:
        """Thin and evict the oldest samples while over the disk budget; return how many went."""
        if self.retention.max_bytes is None:
            return 0
        return enforce(self._conn, self.retention, self.tag_names, time.time(), event_body)

    def used_bytes(self) -> int:
        """Bytes in database pages in use but history's: what the disk budget counts."""
        return outbox_bytes(self._conn)

    def drop_history(self) -> int:
        """Drop the oldest days of history past `keeping.keep` or over `keeping.max_bytes`; return how many."""
        return drop_days(self._conn, self.keeping, time.time(), event_body)

    def _insert(self, samples: SampleBlock | None, events: Sequence[Event]) -> None:
        with self._transaction() as conn:
            if samples is not None and len(samples):
                conn.executemany(
                    "INSERT INTO outbox (kind, tag_id, ts, value, quality, source_ts) "
                    f"VALUES ({SAMPLE}, ?, ?, ?, ?, ?)",
                    zip(
                        samples.tag_id.tolist(),
                        samples.ts.tolist(),
                        _nan_to_none(samples.value),
                        samples.quality.tolist(),
                        _nan_to_none(samples.source_ts),
                    ),
                )
            if events:
                conn.executemany(
                    f"INSERT INTO outbox (kind, ts, body) VALUES ({EVENT}, ?, ?)",
                    ((float(e.ts), event_body(e)) for e in events),
                )

    def build_batch(self, max_rows: int, make: MakeEnvelope, newest: bool = False) -> Batch | None:
        """Take the oldest rows no batch carries yet, have `make` encode them, store the batch.

        `make(content, seq, prev_hash)` returns the envelope bytes; it runs inside the
        transaction, so if it raises nothing is consumed. Returns None when no row waits.
        Publish the batch only after this returns: then it is on disk.

        `newest=True` takes the newest rows instead (live data during a backfill). Either way the
        rows of one batch are consecutive in commit order and seq numbers follow build order.
        """
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        columns = "SELECT id, kind, tag_id, ts, value, quality, source_ts, body FROM outbox "
        with self._transaction() as conn:
            last_seq, last_hash, carried = conn.execute(
                "SELECT last_seq, last_hash, carried_upto FROM chain"
            ).fetchone()
            ranges = list(uncarried_ranges(conn))
            rows: list[tuple] = []
            if newest:
                low, high = ranges[-1]
                rows = conn.execute(columns + "WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?",
                                    (low, high, max_rows)).fetchall()[::-1]
            else:
                for low, high in ranges:
                    rows = conn.execute(columns + "WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                        (low, high, max_rows)).fetchall()
                    if rows:
                        break
            if not rows:
                return None
            older = conn.execute(
                "SELECT 1 FROM outbox WHERE id > ? AND id < ? LIMIT 1", (carried, rows[0][0])).fetchone()
            if older is None:
                carried = rows[-1][0]  # nothing older waits below this batch
            content = self._content(rows)
            seq = last_seq + 1
            envelope = bytes(make(content, seq, bytes(last_hash)))
            digest = hashlib.sha256(envelope).digest()
            batch = Batch(seq, envelope, digest, rows[0][0], rows[-1][0], len(rows))
            conn.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, batch.first_row, batch.last_row, batch.rows, envelope, digest, time.time()),
            )
            conn.execute(
                "UPDATE chain SET last_seq = ?, last_hash = ?, carried_upto = ?",
                (seq, digest, carried),
            )
        return batch

    def _content(self, rows: list[tuple]) -> BatchContent:
        samples = [r for r in rows if r[1] == SAMPLE]
        columns = list(zip(*samples)) if samples else [()] * 8
        block = SampleBlock(
            tag_id=columns[2],
            ts=columns[3],
            value=np.array(columns[4], dtype=np.float64),  # NULL -> NaN
            quality=columns[5],
            source_ts=np.array(columns[6], dtype=np.float64),
        )
        events = [event_from_row(r[3], r[7]) for r in rows if r[1] == EVENT]
        return BatchContent(block, self.tag_names(np.unique(block.tag_id)), events)

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
        """Move the rows batch `seq` carried into history and delete the batch; return the rows (0 if already done).

        The copy into history and the delete are one transaction. Then the oldest days of history go
        while they are past their keep or over their bound; a full disk there is retried after the next one.
        """
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT first_row, last_row FROM batches WHERE seq = ?", (seq,)
            ).fetchone()
            if found is None:
                return 0
            if self.keeping.keep > 0:
                keep_rows(conn, *found, self.keeping, time.time())
            deleted = conn.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", found).rowcount
            conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
        try:
            self.drop_history()
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            log.warning("could not drop the oldest day of history: %s", exc)
        return deleted

    def stats(self) -> StoreStats:
        conn = self._conn
        last_seq = conn.execute("SELECT last_seq FROM chain").fetchone()[0]
        pending = sum(conn.execute("SELECT count(*) FROM outbox WHERE id >= ? AND id < ?", bounds).fetchone()[0]
                      for bounds in uncarried_ranges(conn))
        inflight = conn.execute("SELECT count(*) FROM outbox").fetchone()[0] - pending
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


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    """SQLite would store NaN as NULL anyway; say so explicitly. A whole column at a time: only the NaN
    places are visited one by one (a Modbus device's column of source times is NaN throughout)."""
    missing = np.isnan(values)
    if missing.all():
        return [None] * len(values)
    listed = values.tolist()
    for index in np.flatnonzero(missing).tolist():
        listed[index] = None
    return listed


def _db_bytes(path: Path) -> int:
    """Database plus WAL on disk: what counts against a disk budget."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total
