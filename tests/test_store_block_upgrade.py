"""Migration 0006_blocks: a database written one row per sample is read on as blocks, nothing lost or renumbered."""

import sqlite3
from pathlib import Path

import numpy as np

from core.types import Event
from store import SampleBlock, Store
from store.schema import MIGRATIONS
from test_store import Recorder


def old_database(path: Path) -> None:
    """The layout of the version before blocks: migrations up to 0005, one outbox row per sample or event; six
    rows committed, the first two acknowledged (deleted), rows 3-4 in a built batch, 5-6 waiting."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, step in MIGRATIONS[:5]:
        step(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    conn.execute("INSERT INTO tags VALUES (1, 'TI-1'), (2, 'PI-2')")
    conn.executemany("INSERT INTO outbox (id, kind, tag_id, ts, value, quality, source_ts, body) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?, ?)", [
                         (1, 0, 1, 1.0, 1.5, 0, None, None), (2, 0, 2, 1.0, 2.5, 0, None, None),
                         (3, 0, 1, 2.0, None, 16, 1.75, None), (4, 1, None, 2.0, None, None, None,
                                                                '{"kind": "note", "source": "gw", "message": "m", '
                                                                '"priority": 0, "data": {}}'),
                         (5, 0, 2, 3.0, 5e-324, 0, None, None), (6, 0, 1, 3.0, float("inf"), 0, 2.5, None)])
    conn.execute("DELETE FROM outbox WHERE id <= 2")
    conn.execute("INSERT INTO batches VALUES (7, 3, 4, 2, X'01', X'02', 0)")
    conn.execute("UPDATE chain SET last_seq = 7, carried_upto = 4, epoch = zeroblob(16)")
    conn.close()


def test_rows_waiting_at_the_upgrade_keep_their_ids_values_and_batch(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_database(path)
    store = Store.open(path)
    assert [batch.first_row for batch in store.pending_batches()] == [3], "the built batch still names its rows"
    assert store.stats().rows_pending == 2 and store.stats().rows_inflight == 2
    recorder = Recorder()
    batch = store.build_batch(100, recorder)
    assert (batch.seq, batch.first_row, batch.last_row, batch.rows) == (8, 5, 6, 2)
    carried = recorder.carried[8].samples
    assert carried.tag_id.tolist() == [2, 1] and carried.ts.tolist() == [3.0, 3.0]
    assert carried.value.tobytes() == np.array([5e-324, np.inf]).tobytes()
    assert carried.source_ts[0] != carried.source_ts[0] and carried.source_ts[1] == 2.5, "NULL read back as NaN"
    store.append(SampleBlock([1], [4.0], [7.0], [0], [np.nan]), [Event("note", 4.0, "gw", "after")])
    ids = [row_id for (row_id,) in store._conn.execute("SELECT id FROM outbox ORDER BY id")]
    assert ids == [3, 4, 5, 6, 7, 8], "ids go on from the old counter"
    assert store._conn.execute("SELECT rows FROM outbox_committed").fetchone()[0] == 8, "6 before, 2 since"
    assert store.acknowledge(7) == 2 and store.acknowledge(8) == 2
    store.close()


def test_a_database_that_never_committed_starts_its_counter_at_zero(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "new.db")
    store.append(SampleBlock([1, 2, 3], [1.0, 1.0, 2.0], [0.0] * 3, [0] * 3, [np.nan] * 3), [])
    assert store._conn.execute("SELECT id, kind, ts, rows FROM outbox").fetchall() == [(1, 2, 1.0, 3)]
    assert store._conn.execute("SELECT rows FROM outbox_committed").fetchone()[0] == 3
    store.close()
