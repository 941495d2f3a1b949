"""The outbox keeps every row until acknowledged, in order, and its seq chain survives restarts."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.types import Event, Priority
from store import BatchContent, SampleBlock, SchemaError, Store, pending_migrations
from storechain import chain_head


def block(tag_ids, start: float = 0.0) -> SampleBlock:
    n = len(tag_ids)
    ts = start + np.arange(n, dtype=float)
    value = ts * 1.5
    if n:
        value[0] = np.nan  # bad quality rows may carry no value
    source_ts = np.where(np.arange(n) % 2 == 0, ts - 0.25, np.nan)
    return SampleBlock(tag_ids, ts, value, np.arange(n) % 3, source_ts)


class Recorder:
    """A stand-in encoder: remembers what each seq carried; random bytes prove no re-encoding."""

    def __init__(self) -> None:
        self.carried: dict[int, BatchContent] = {}
        self.prev: dict[int, bytes] = {}

    def __call__(self, content: BatchContent, seq: int, prev_hash: bytes) -> bytes:
        self.carried[seq] = content
        self.prev[seq] = prev_hash
        return f"batch {seq} rows {content.rows} ".encode() + os.urandom(8)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gatewayd.db"


def test_open_creates_private_directory_and_file(db: Path) -> None:
    store = Store.open(db)
    store.close()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert pending_migrations(conn) == []


def test_open_rejects_unknown_synchronous(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store.open(db, synchronous="off")


def test_database_from_a_newer_version_is_refused(db: Path) -> None:
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES ('9999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="9999_future"):
        Store.open(db)


def test_append_build_acknowledge_round_trip(db: Path) -> None:
    store = Store.open(db)
    ids = store.tag_ids(["FT-101", "PT-102"])
    alarm = Event("alarm", 5.5, "PT-102", "high pressure", Priority.HIGH, {"limit": 10.0})
    store.append(block([ids[0], ids[1], ids[0]]), [alarm])
    stats = store.stats()
    assert (stats.rows_pending, stats.rows_inflight, stats.batches_pending) == (4, 0, 0)
    assert stats.oldest_pending_ts == 0.0

    make = Recorder()
    batch = store.build_batch(100, make)
    assert (batch.seq, batch.rows) == (1, 4)
    assert batch.digest == hashlib.sha256(batch.envelope).digest()
    assert make.prev[1] == bytes(32)
    content = make.carried[1]
    assert {tag_id: content.tag_names[tag_id] for tag_id in content.samples.tag_id.tolist()} == \
        {int(ids[0]): "FT-101", int(ids[1]): "PT-102"}
    np.testing.assert_array_equal(content.samples.tag_id, [ids[0], ids[1], ids[0]])
    np.testing.assert_array_equal(content.samples.value, [np.nan, 1.5, 3.0])
    np.testing.assert_array_equal(content.samples.source_ts, [-0.25, np.nan, 1.75])
    np.testing.assert_array_equal(content.samples.quality, [0, 1, 2])
    assert content.events == [alarm]
    assert store.build_batch(100, make) is None
    assert chain_head(store) == (1, batch.digest)
    assert store.stats().rows_inflight == 4

    assert store.acknowledge(1) == 4
    stats = store.stats()
    assert (stats.rows_pending, stats.rows_inflight, stats.batches_pending) == (0, 0, 0)
    assert stats.oldest_pending_ts is None
    assert stats.last_seq == 1 and stats.db_bytes > 0
    store.close()


def test_acknowledge_is_idempotent(db: Path) -> None:
    store = Store.open(db)
    store.append(block(store.tag_ids(["A", "B"])), [])
    batch = store.build_batch(10, Recorder())
    assert store.acknowledge(batch.seq) == 2
    assert store.acknowledge(batch.seq) == 0
    assert store.acknowledge(999) == 0
    store.close()


def test_batches_respect_max_rows_and_chain_hashes(db: Path) -> None:
    store = Store.open(db, block_samples=3)
    store.append(block(store.tag_ids(["A"] * 7)), [Event("note", 9.0, "gw", "x")])
    make = Recorder()
    batches = [store.build_batch(3, make) for _ in range(3)]
    assert [b.rows for b in batches] == [3, 3, 2]
    assert [b.seq for b in batches] == [1, 2, 3]
    assert make.prev[2] == batches[0].digest and make.prev[3] == batches[1].digest
    assert [b.seq for b in store.pending_batches()] == [1, 2, 3]
    store.close()


def test_failed_encoder_consumes_nothing(db: Path) -> None:
    store = Store.open(db)
    store.append(block(store.tag_ids(["A"])), [])

    def broken(content, seq, prev):
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError):
        store.build_batch(10, broken)
    assert chain_head(store) == (0, bytes(32))
    assert store.build_batch(10, Recorder()).seq == 1
    store.close()


def test_unacknowledged_batch_survives_crash_byte_for_byte(db: Path) -> None:
    store = Store.open(db)
    store.append(block(store.tag_ids(["A", "B"])), [])
    built = store.build_batch(10, Recorder())
    store.close()  # no acknowledge: as if the daemon died after publishing

    store = Store.open(db)
    assert store.pending_batches() == [built]
    assert store.build_batch(10, Recorder()) is None  # the rows are not sent twice
    store.append(block(store.tag_ids(["A"]), start=50), [])
    after = store.build_batch(10, Recorder())
    assert after.seq == 2
    assert chain_head(store) == (2, after.digest)
    store.close()


def test_seq_continues_after_everything_acknowledged_and_reopened(db: Path) -> None:
    store = Store.open(db)
    store.append(block(store.tag_ids(["A"])), [])
    store.acknowledge(store.build_batch(10, Recorder()).seq)
    store.close()
    store = Store.open(db)
    assert chain_head(store)[0] == 1
    store.append(block(store.tag_ids(["A"])), [])
    assert store.build_batch(10, Recorder()).seq == 2
    store.close()


def test_tag_ids_are_stable_across_reopen_and_reordering(db: Path) -> None:
    store = Store.open(db)
    first = store.tag_ids(["A", "B", "C"])
    store.close()
    store = Store.open(db)
    again = store.tag_ids(["C", "D", "A"])
    assert again[0] == first[2] and again[2] == first[0]
    assert again[1] not in first
    assert again.dtype == np.int64
    assert store.tag_names(again) == {int(again[0]): "C", int(again[1]): "D", int(again[2]): "A"}
    store.close()
    store = Store.open(db)  # names read from the database, not from tag_ids
    assert store.tag_names([again[1], again[1], -1, 0, 10**6, first[1]]) == {int(again[1]): "D", int(first[1]): "B"}, \
        "repeats once, ids no tag has left out"
    store.close()


# A scenario is a list of operations; hypothesis shrinks a failing one to the shortest story.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(0, 2)),
        st.tuples(st.just("build"), st.integers(1, 5)),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("reopen")),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_rows_are_never_skipped_or_duplicated(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.db"
        store = Store.open(path, synchronous="normal")
        names = ["T0", "T1", "T2"]
        ids = dict(zip(names, store.tag_ids(names).tolist()))
        appended: list[tuple] = []
        acked: dict[int, BatchContent] = {}
        make = Recorder()
        clock = 0.0

        def ack(seq: int) -> None:
            content = make.carried[seq]
            assert store.acknowledge(seq) == content.rows
            acked[seq] = content

        for op in ops:
            if op[0] == "append":
                tags = [ids[names[i % 3]] for i in range(op[1])]
                events = [Event("e", clock + k, f"src{k}", f"m{clock}") for k in range(op[2])]
                store.append(block(tags, start=clock), events)
                appended += [("s", clock + i) for i in range(op[1])]
                appended += [("e", e.ts) for e in events]
                clock += 100
            elif op[0] == "build":
                before = chain_head(store)
                batch = store.build_batch(op[1], make)
                if batch is not None:
                    assert batch.seq == before[0] + 1 and make.prev[batch.seq] == before[1]
            elif op[0] == "ack":
                pending = store.pending_batches()
                if pending:
                    ack(pending[op[1] % len(pending)].seq)  # any order, as PUBACKs may come
            else:
                pending = store.pending_batches()
                store.close()
                store = Store.open(path, synchronous="normal")
                assert store.pending_batches() == pending

        while (batch := store.build_batch(4, make)) is not None:
            pass
        for batch in store.pending_batches():
            ack(batch.seq)
        assert store.stats().rows_pending == store.stats().rows_inflight == 0
        store.close()

    # A batch lists its samples, then its events, so the two kinds are compared each in order.
    received = [acked[seq] for seq in sorted(acked)]
    assert [("s", t) for c in received for t in c.samples.ts.tolist()] == [
        row for row in appended if row[0] == "s"
    ]
    assert [("e", e.ts) for c in received for e in c.events] == [
        row for row in appended if row[0] == "e"
    ]


@pytest.mark.parametrize("source_ts", [[np.nan] * 4, [1.5, np.nan, 2.5, np.nan], [1.0, 2.0, 3.0, 4.0]],
                         ids=["no source times", "some", "all"])
def test_stored_columns_come_back_exactly_with_nan_kept(db: Path, source_ts) -> None:
    """Values and source times go through the block bytes and a batch bit for bit: NaN, infinity and the
    smallest subnormal included."""
    store = Store.open(db)
    value = [np.nan, np.inf, 5e-324, 0.1 + 0.2]
    store.append(SampleBlock([1, 2, 3, 4], [10.0, 11.0, 12.0, 13.0], value, [16, 0, 0, 0], source_ts), [])
    assert store._conn.execute("SELECT kind, ts, rows FROM outbox").fetchall() == [(2, 10.0, 4)], "one block"
    recorder = Recorder()
    store.build_batch(10, recorder)
    carried = recorder.carried[1].samples
    assert carried.value.tobytes() == np.array(value).tobytes()
    assert carried.source_ts.tobytes() == np.array(source_ts, dtype=float).tobytes()
    store.close()
