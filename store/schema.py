"""Schema migrations: named steps applied once each, in the order they are listed.

The `schema_migrations` table records which steps a database has seen, so an old database is
brought forward on open, and a database written by a newer gatewayd (one with steps this code
does not know) is refused instead of being misread.

    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> pending_migrations(conn)
    ['0001_outbox', '0002_retention', '0003_state', '0004_history', '0005_epoch', '0006_blocks', '0007_staged_history',
     '0008_staged_totals']
    >>> migrate(conn)
    ['0001_outbox', '0002_retention', '0003_state', '0004_history', '0005_epoch', '0006_blocks', '0007_staged_history',
     '0008_staged_totals']
    >>> pending_migrations(conn)
    []
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import numpy as np

from store.blocks import pack
from store.compaction import TRIGGER, count_staged, stage_waiting
from store.records import SampleBlock


class SchemaError(RuntimeError):
    """The database cannot be used by this version of gatewayd."""


def _outbox(conn: sqlite3.Connection) -> None:
    """Tags, the outbox of samples and events in commit order, built batches and the chain head.

    AUTOINCREMENT keeps outbox ids rising for ever, even after every row was acknowledged, so a
    row id alone says whether a batch has carried it. `chain` holds one row: the last seq used,
    the SHA-256 of that batch's envelope and the highest row id given to a batch.
    """
    _run(
        conn,
        """
        CREATE TABLE tags (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,          -- 0 sample, 1 event
            tag_id INTEGER,                 -- samples only
            ts REAL NOT NULL,               -- gateway time, Unix seconds
            value REAL,                     -- samples, NULL when NaN
            quality INTEGER,                -- samples
            source_ts REAL,                 -- samples, NULL when the device gave none
            body TEXT                       -- events: JSON kind, source, message, priority, data
        );
        CREATE TABLE batches (
            seq INTEGER PRIMARY KEY,
            first_row INTEGER NOT NULL,
            last_row INTEGER NOT NULL,
            rows INTEGER NOT NULL,
            envelope BLOB NOT NULL,
            digest BLOB NOT NULL,
            built_at REAL NOT NULL
        );
        CREATE TABLE chain (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq INTEGER NOT NULL,
            last_hash BLOB NOT NULL,
            carried_upto INTEGER NOT NULL
        );
        INSERT INTO chain VALUES (1, 0, zeroblob(32), 0);
        """,
    )


def _retention(conn: sqlite3.Connection) -> None:
    """How far the disk budget has thinned the oldest samples, so no range is thinned twice.

    One row: `thinned_upto` is the highest outbox id already thinned; `evicted` and `gaps` count
    the samples removed and the gap records written, over the database's life, for metrics.
    """
    _run(
        conn,
        """
        CREATE TABLE retention (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            thinned_upto INTEGER NOT NULL,
            evicted INTEGER NOT NULL,
            gaps INTEGER NOT NULL
        );
        INSERT INTO retention VALUES (1, 0, 0, 0)
        """,
    )


def _state(conn: sqlite3.Connection) -> None:
    """Named JSON documents that must survive a restart, such as the rule engine's alarm states and
    bypass authorizations (`Store.save_state` / `Store.load_state`). They are not outbox rows: they
    are never sent and never evicted, only replaced."""
    _run(
        conn,
        """
        CREATE TABLE state (
            name TEXT PRIMARY KEY,
            body TEXT NOT NULL,             -- JSON
            saved_at REAL NOT NULL          -- Unix seconds
        )
        """,
    )


def _history(conn: sqlite3.Connection) -> None:
    """The days of history kept after acknowledgement (store.keeping): one row per UTC day (days since
    1970-01-01), its sample and event counts, and the bytes of pages its tables took as they were filled.
    The day's rows are in tables of their own, `history_samples_YYYYMMDD` and `history_events_YYYYMMDD`."""
    _run(
        conn,
        """
        CREATE TABLE history_days (
            day INTEGER PRIMARY KEY,
            samples INTEGER NOT NULL,
            events INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        )
        """,
    )


def _epoch(conn: sqlite3.Connection) -> None:
    """The chain's epoch (uplink protocol 1.1) and the `chain_reset` that begins it.

    A database that already sent batches keeps its chain in the zero epoch (16 zero bytes: the chain
    begun under protocol 1.0); one that never did gets NULL, and the daemon begins a new epoch at start
    (`Store.begin_epoch`). `reset` holds the JSON of the chain_reset event that seq 1 of the epoch
    carries, NULL for the zero epoch.
    """
    _run(
        conn,
        """
        ALTER TABLE chain ADD COLUMN epoch BLOB;
        ALTER TABLE chain ADD COLUMN reset TEXT;
        UPDATE chain SET epoch = zeroblob(16) WHERE last_seq > 0
        """,
    )


def _blocks(conn: sqlite3.Connection) -> None:
    """The outbox as blocks (store.blocks): one row per block of a tick's samples, one per event.

    The table is rebuilt with `rows` (what a row counts for in a batch's `batch_max_rows`: a block's
    samples, 1 for an event) before the BLOB, so reading it never walks a block's overflow pages. Rows
    waiting from the previous version keep their ids (built batches name them): each event as it was,
    each sample as a block of one. AUTOINCREMENT's counter carries over, so ids keep rising.

    Ids now count rows, not samples: `outbox_committed.rows` counts the samples and events ever committed
    (a trigger adds each new row's `rows`; before this step one row was one sample or event, so it starts
    at the old counter), for metrics and for tests that account for every row.
    """
    counter = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    conn.execute("ALTER TABLE outbox RENAME TO outbox_rows")
    _run(
        conn,
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,          -- 1 event, 2 block of samples
            ts REAL NOT NULL,               -- gateway time, Unix seconds: the event's, the block's earliest
            rows INTEGER NOT NULL,          -- the block's samples, 1 for an event
            body BLOB NOT NULL              -- an event's JSON, a block's store.blocks bytes
        );
        INSERT INTO outbox SELECT id, 1, ts, 1, body FROM outbox_rows WHERE kind = 1
        """,
    )
    legacy = conn.execute("SELECT id, tag_id, ts, value, quality, source_ts FROM outbox_rows WHERE kind = 0 "
                          "ORDER BY id")
    while rows := legacy.fetchmany(10_000):
        conn.executemany("INSERT INTO outbox VALUES (?, 2, ?, 1, ?)", (
            (row_id, ts, pack(SampleBlock([tag_id], [ts], [np.nan if value is None else value], [quality],
                                          [np.nan if source_ts is None else source_ts])))
            for row_id, tag_id, ts, value, quality, source_ts in rows))
    conn.execute("DROP TABLE outbox_rows")
    conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('outbox', 'outbox_rows')")
    if counter is not None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", counter)
    _run(
        conn,
        """
        CREATE TABLE outbox_committed (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            rows INTEGER NOT NULL           -- samples and events ever committed to the outbox
        );
        INSERT INTO outbox_committed VALUES (1, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))
        """,
    )
    conn.execute("CREATE TRIGGER outbox_count AFTER INSERT ON outbox BEGIN "
                 "UPDATE outbox_committed SET rows = rows + NEW.rows; END")


def _staged_history(conn: sqlite3.Connection) -> None:
    """History fed at commit (store.compaction): `history_staged` holds each committed event and block of
    samples (by outbox id) until compacted into per-tag chunks; `history_compactions` the time span of
    each compaction, numbered for ever upwards. The rows waiting in the outbox at the upgrade are staged
    here, since the previous gatewayd would have kept them in history only once acknowledged."""
    _run(
        conn,
        """
        CREATE TABLE history_staged (
            id INTEGER PRIMARY KEY,         -- the row's outbox id: commit order
            kind INTEGER NOT NULL,          -- 1 event, 2 block of samples
            ts REAL NOT NULL,
            body NOT NULL                   -- the outbox row's body: event JSON, or the block's bytes
        );
        CREATE TABLE history_compactions (
            k INTEGER PRIMARY KEY AUTOINCREMENT,
            first_ts REAL NOT NULL,         -- the span of the samples it compacted, Unix seconds
            last_ts REAL NOT NULL
        )
        """,
    )
    stage_waiting(conn)


def _staged_totals(conn: sqlite3.Connection) -> None:
    """What is staged for history, in one row kept by the staging trigger and set by each compaction
    (store.compaction): the due check after every commit and history's bytes read it instead of summing
    every staged row. The trigger is dropped here; the store's open makes it again, with the update."""
    _run(
        conn,
        """
        CREATE TABLE history_staged_totals (
            bytes INTEGER NOT NULL,         -- the staged rows' length(body) summed
            first_ts REAL,                  -- their earliest and latest ts, NULL when none is staged
            last_ts REAL
        )
        """,
    )
    conn.execute("INSERT INTO history_staged_totals VALUES (0, NULL, NULL)")
    count_staged(conn)
    conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


def _run(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements one by one: executescript would commit the open transaction.

    Comments in `script` must not contain `;`.
    """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("0001_outbox", _outbox),
    ("0002_retention", _retention),
    ("0003_state", _state),
    ("0004_history", _history),
    ("0005_epoch", _epoch),
    ("0006_blocks", _blocks),
    ("0007_staged_history", _staged_history),
    ("0008_staged_totals", _staged_totals),
]


def _applied(conn: sqlite3.Connection) -> list[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY rowid")]


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names of the steps not yet applied, in order. Reads only; safe on a live database."""
    applied = set(_applied(conn))
    unknown = applied - {name for name, _ in MIGRATIONS}
    if unknown:
        raise SchemaError(
            f"database has migrations this gatewayd does not know: {sorted(unknown)}; "
            "it was written by a newer version"
        )
    return [name for name, _ in MIGRATIONS if name not in applied]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the pending steps, each in its own transaction with its record; return their names.

    `conn` must be in autocommit mode (isolation_level=None) so the transactions here are the
    only ones.
    """
    todo = pending_migrations(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    steps = dict(MIGRATIONS)
    for name in todo:
        conn.execute("BEGIN IMMEDIATE")
        try:
            steps[name](conn)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return todo
