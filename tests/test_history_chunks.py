"""History fed at commit: staged blocks compacted into per-tag chunks by day, read back as one snapshot."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from bench.bench_history import commit
from core.types import Event, Priority
from store import History, Keeping, SampleBlock, Store, chunks, compaction
from store.blocks import pack
from store.chunks import DEVICE_TIMES, NARROW_DEVICE_TIMES, NARROW_TIMES, TIMES, ChunkError, pack_groups, unpack
from store.compaction import COMPACT_SPAN, compact
from store.records import event_body
from store.history import DAY, chunks_table, day_of, events_table, samples_table
from store.schema import MIGRATIONS

NOW = time.time()
MIDNIGHT = day_of(NOW) * DAY  # today's start: inside any keep of a day or more


def block(tag_ids, ts, values, quality=0, source_ts=None) -> SampleBlock:
    n = len(tag_ids)
    return SampleBlock(tag_ids, ts, values, np.full(n, quality),
                       np.full(n, np.nan) if source_ts is None else source_ts)


def staged(store: Store) -> int:
    """The rows staged, once the totals the due check reads are found to be theirs."""
    totals = store._conn.execute("SELECT bytes, first_ts, last_ts FROM history_staged_totals").fetchall()
    assert totals == store._conn.execute(
        "SELECT coalesce(sum(length(body)), 0), min(ts), max(ts) FROM history_staged").fetchall()
    return store._conn.execute("SELECT count(*) FROM history_staged").fetchone()[0]


def chunk_rows(store: Store, day: int) -> list[tuple[int, int]]:
    """(compaction, tag id) of each chunk of `day`, in key order."""
    return [(key >> 32, key & 0xFFFFFFFF) for (key,) in
            store._conn.execute(f"SELECT id FROM {chunks_table(day)} ORDER BY id")]


def read(store: Store, tag: str, start: float, end: float):
    history = History.open(store.path)
    try:
        return history.samples(tag, start, end)
    finally:
        history.close()


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(tmp_path / "gatewayd.db")
    yield store
    store.close()


def test_a_chunk_keeps_its_columns_and_device_times_only_when_a_sample_has_one() -> None:
    ts, value = np.array([3.0, 2.0, 1.0]), np.array([7.1, np.nan, 0.5])  # taken in reverse order
    quality, source = np.array([1, 17, 0], np.uint8), np.array([2.5, np.nan, np.nan])
    order = np.array([2, 1, 0])
    layouts, (first, second) = pack_groups(order, ts, value, quality, source, np.array([0, 2, 3]))
    assert layouts == [NARROW_TIMES, DEVICE_TIMES] and len(first) == 2 * 13 and len(second) == 25
    got = unpack(NARROW_TIMES, bytes(first))
    assert got[0].tolist() == [1.0, 2.0] and got[1][0] == 0.5 and np.isnan(got[1][1]) and got[3] is None
    assert got[1].dtype == np.float64
    assert [column.tolist() for column in unpack(DEVICE_TIMES, bytes(second))] == [[3.0], [7.1], [1], [2.5]]
    assert pack_groups(order, ts, value, quality, None, np.array([0, 3]))[0] == [TIMES]
    many = np.arange(chunks.GATHER_STEP * 2 + 3.0)  # gathered in steps: the last one partial
    (body,) = pack_groups(many[::-1].argsort(), many[::-1], many, np.zeros(len(many), np.uint8), None,
                          np.array([0, len(many)]))[1]
    assert (unpack(NARROW_TIMES, bytes(body))[0] == many).all()
    assert (unpack(NARROW_TIMES, bytes(body))[1] == many[::-1]).all()
    with pytest.raises(ChunkError, match="layout 9"):
        unpack(9, bytes(first))
    with pytest.raises(ChunkError, match="records of 13 bytes, not 25 bytes"):
        unpack(NARROW_TIMES, bytes(first)[:-1])


@pytest.mark.parametrize("wide", [0.1, 2.0**24 + 1, 1e300, -1e-300, 3.5e38])
def test_values_are_float32_in_a_chunk_only_when_every_one_is_exactly_a_float32(wide: float) -> None:
    ts = np.arange(6.0)
    value = np.array([-0.0, np.inf, 65535.0, wide, np.nan, 2.0**24])
    source = np.array([np.nan, np.nan, 9.0, np.nan, 8.0, np.nan])
    bounds = np.array([0, 2, 3, 4, 6])  # exact; exact with a device time; one wide; a device time, exact
    layouts, bodies = pack_groups(np.arange(6), ts, value, np.zeros(6, np.uint8), source, bounds)
    assert layouts == [NARROW_TIMES, NARROW_DEVICE_TIMES, TIMES, NARROW_DEVICE_TIMES]
    assert [len(body) for body in bodies] == [2 * 13, 21, 17, 2 * 21]
    read = [unpack(layout, bytes(body)) for layout, body in zip(layouts, bodies)]
    values = np.concatenate([got[1] for got in read])
    assert values.dtype == np.float64 and values[:4].tolist() == value[:4].tolist() and np.isnan(values[4])
    assert values[5] == 2.0**24 and np.signbit(values[0]), "-0.0 keeps its sign"
    assert read[1][3].tolist() == [9.0] and read[3][3][0] == 8.0 and np.isnan(read[3][3][1])


def test_staged_rows_are_compacted_once_they_span_the_compaction_span_not_before(store: Store) -> None:
    (a,) = store.tag_ids(["TI101"]).tolist()
    start = MIDNIGHT + 100.0
    commit(store, block([a], [start], [1.0]))
    commit(store, block([a], [start + COMPACT_SPAN - 0.001], [2.0]))
    assert staged(store) == 2, "just under the span: still staged"
    commit(store, block([a], [start + COMPACT_SPAN], [3.0]))
    assert staged(store) == 0, "exactly at the span: compacted"
    assert chunk_rows(store, day_of(start)) == [(1, a)], "one chunk of the tag for the compaction"
    assert read(store, "TI101", start, start + DAY).value.tolist() == [1.0, 2.0, 3.0]
    assert store._conn.execute("SELECT samples FROM history_days").fetchone()[0] == 3


def test_a_compaction_across_midnight_splits_a_tag_into_the_two_days(store: Store) -> None:
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    before, after = MIDNIGHT - 0.5, MIDNIGHT
    commit(store, block([a, b, a, b], [before, before, after, after], [1.0, 2.0, 3.0, 4.0]))
    assert compact(store._conn, store.keeping, NOW, force=True) == 4
    assert chunk_rows(store, day_of(before)) == [(1, a), (1, b)]
    assert chunk_rows(store, day_of(after)) == [(1, a), (1, b)]
    days = {day: samples for day, samples in store._conn.execute("SELECT day, samples FROM history_days")}
    assert days == {day_of(before): 2, day_of(after): 2}
    assert read(store, "TI101", before, after + 1).ts.tolist() == [before, after]
    assert read(store, "TI101", after, after + 1).value.tolist() == [3.0], "start inclusive, end exclusive"
    assert read(store, "PI102", before, after).value.tolist() == [2.0]


def test_a_tag_in_two_chunks_and_still_staged_reads_in_time_order_with_ties_in_commit_order(store: Store) -> None:
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    t = MIDNIGHT + 1000.0
    commit(store, block([a, b, a], [t, t, t + 1], [1.0, 9.0, 2.0]))
    commit(store, block([a, a], [t + 1, t + 2], [3.0, 4.0]))  # t + 1 again: a tie, committed later
    compact(store._conn, store.keeping, NOW, force=True)
    commit(store, block([a], [t + 2], [5.0]))  # a tie across compactions
    compact(store._conn, store.keeping, NOW, force=True)
    commit(store, block([a, a], [t + 2, t + 3], [6.0, np.nan], quality=17))  # still staged
    assert chunk_rows(store, day_of(t)) == [(1, a), (1, b), (2, a)]
    assert staged(store) == 1
    got = read(store, "TI101", t, t + 10)
    assert got.ts.tolist() == [t, t + 1, t + 1, t + 2, t + 2, t + 2, t + 3]
    assert got.value.tolist()[:6] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and np.isnan(got.value[6])
    assert got.quality.tolist() == [0, 0, 0, 0, 0, 17, 17]
    assert read(store, "TI101", t + 1.5, t + 2.5).value.tolist() == [4.0, 5.0, 6.0]
    history = History.open(store.path)
    try:
        trend = history.trend("TI101", t, t + 4, 2)
        assert trend.count.tolist() == [3, 4] and trend.bad.tolist() == [0, 2]
        assert trend.low.tolist() == [1.0, 4.0] and trend.high.tolist() == [3.0, 6.0]
    finally:
        history.close()


def test_a_clock_step_back_between_compactions_still_reads_in_time_order(store: Store) -> None:
    (a,) = store.tag_ids(["TI101"]).tolist()
    t = MIDNIGHT + 5000.0
    commit(store, block([a], [t + 10], [1.0]))
    compact(store._conn, store.keeping, NOW, force=True)
    commit(store, block([a], [t], [2.0]))
    compact(store._conn, store.keeping, NOW, force=True)
    assert read(store, "TI101", t, t + 20).value.tolist() == [2.0, 1.0]


def test_events_are_kept_at_commit_whatever_path_commits_them(store: Store) -> None:
    alarm = Event("alarm", MIDNIGHT + 1, "TI101", "high", Priority.HIGH, {"value": 91.0})
    store.append(None, [alarm])
    history = History.open(store.path)
    try:
        assert history.events(MIDNIGHT, MIDNIGHT + 10) == [alarm], "staged: in history before any acknowledgement"
        compact(store._conn, store.keeping, NOW, force=True)
        assert history.events(MIDNIGHT, MIDNIGHT + 10) == [alarm], "compacted into its day"
        (body,) = store._conn.execute(f"SELECT body FROM {events_table(day_of(MIDNIGHT + 1))}").fetchone()
        assert '"alarm"' in body
        store._conn.execute("INSERT INTO outbox (kind, ts, rows, body) VALUES (1, ?, 1, ?)",
                            (MIDNIGHT + 2, '{"kind": "gap", "source": "store", "message": "m", "priority": 3, '
                                           '"data": {}}'))  # as the disk budget writes its gap record
        assert [event.kind for event in history.events(MIDNIGHT, MIDNIGHT + 10)] == ["alarm", "gap"]
    finally:
        history.close()


def test_a_crash_before_or_during_a_compaction_loses_and_doubles_nothing(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store.open(path)
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    t = MIDNIGHT + 200.0
    commit(store, block([a, b], [t, t], [1.0, 2.0]))
    compact(store._conn, store.keeping, NOW, force=True)
    commit(store, block([a, b], [t + 1, t + 1], [3.0, 4.0]))
    store._conn.close()  # the process dies after the commit, before its compaction
    store = Store.open(path)
    assert read(store, "TI101", t, t + 10).value.tolist() == [1.0, 3.0]

    def dies_midway(*args):
        append_days(*args)
        raise sqlite3.OperationalError("disk I/O error")  # after the chunks' inserts, before the commit

    append_days = compaction._append_days
    monkeypatch.setattr(compaction, "_append_days", dies_midway)
    with pytest.raises(sqlite3.OperationalError):
        compact(store._conn, store.keeping, NOW, force=True)
    assert staged(store) == 1 and len(chunk_rows(store, day_of(t))) == 2, "rolled back whole"
    monkeypatch.undo()
    compact(store._conn, store.keeping, NOW, force=True)
    assert read(store, "TI101", t, t + 10).value.tolist() == [1.0, 3.0]
    assert read(store, "PI102", t, t + 10).value.tolist() == [2.0, 4.0]
    assert store._conn.execute("SELECT sum(samples) FROM history_days").fetchone()[0] == 4
    store.close()


def test_a_days_bytes_are_its_tables_pages_and_history_bytes_count_the_staged_rows(store: Store) -> None:
    tags = store.tag_ids([f"T{i}" for i in range(300)])
    for step in range(13):  # compacted at the 11th, the last two staged
        commit(store, block(tags, np.full(300, MIDNIGHT + COMPACT_SPAN / 10 * step), np.arange(300.0)))
    assert staged(store) == 2
    day = day_of(MIDNIGHT)
    pages = store._conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN (?, ?)",
                                (chunks_table(day), events_table(day))).fetchone()[0]
    assert store._conn.execute("SELECT bytes FROM history_days").fetchone()[0] == pages
    staged_size = store._conn.execute("SELECT sum(length(body)) FROM history_staged").fetchone()[0]
    assert staged_size > 300 * 33
    assert store.stats().history_bytes == pages + staged_size


def test_keep_zero_stages_nothing_and_discards_what_was_staged(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gatewayd.db")
    (a,) = store.tag_ids(["TI101"]).tolist()
    commit(store, block([a], [MIDNIGHT], [1.0]))
    store.close()
    store = Store.open(tmp_path / "gatewayd.db", keeping=Keeping(keep=0))
    commit(store, block([a], [MIDNIGHT + 1], [2.0]))
    assert staged(store) == 1, "nothing staged after keep 0; the row staged before waits"
    assert compact(store._conn, store.keeping, NOW, force=True) == 1
    assert staged(store) == 0 and store.stats().history_days == 0
    store.close()


def old_database(path: Path, yesterday: float, today: float) -> None:
    """A store as the gatewayd before staged history left it: its schema steps up to 0005, a day of history
    in per-sample rows (with its events), and rows waiting in the outbox, one row per sample."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, step in MIGRATIONS[:5]:
        step(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    conn.executemany("INSERT INTO tags (id, name) VALUES (?, ?)", [(1, "TI101"), (2, "PI102")])
    day = day_of(yesterday)
    conn.execute(f"CREATE TABLE {samples_table(day)} (tag_id INTEGER NOT NULL, ts REAL NOT NULL, id INTEGER NOT NULL, "
                 "value REAL, quality INTEGER, source_ts REAL, PRIMARY KEY (tag_id, ts, id)) WITHOUT ROWID")
    conn.execute(f"CREATE TABLE {events_table(day)} (id INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)")
    conn.executemany(f"INSERT INTO {samples_table(day)} VALUES (?, ?, ?, ?, ?, NULL)",
                     [(1, yesterday, 1, 1.0, 0), (2, yesterday, 2, 2.0, 0), (1, yesterday + 1, 3, None, 17)])
    conn.execute(f"INSERT INTO {events_table(day)} VALUES (4, ?, ?)", (yesterday + 2, OLD_EVENT))
    conn.execute("INSERT INTO history_days VALUES (?, 3, 1, 8192)", (day,))
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', 4)")
    conn.executemany("INSERT INTO outbox (kind, tag_id, ts, value, quality, source_ts) VALUES (0, ?, ?, ?, 0, NULL)",
                     [(1, today, 5.0), (2, today, 6.0), (1, today + 1, 7.0)])
    conn.execute("INSERT INTO outbox (kind, ts, body) VALUES (1, ?, ?)", (today + 2, OLD_EVENT))
    conn.close()


OLD_EVENT = '{"kind": "alarm", "source": "TI101", "message": "high", "priority": 3, "data": {}}'


def test_an_upgrade_keeps_the_old_days_and_stages_the_rows_waiting_in_the_outbox(tmp_path: Path) -> None:
    yesterday, today = MIDNIGHT - 600.0, MIDNIGHT + 60.0
    path = tmp_path / "gatewayd.db"
    old_database(path, yesterday, today)
    store = Store.open(path)
    try:
        assert staged(store) == 4, "the rows waiting staged, and counted in the totals"
        commit(store, block([2], [today + 3], [8.0]))
        assert staged(store) == 5, "the trigger made again: it counts what it stages"
        expected = [yesterday, yesterday + 1, today, today + 1]
        got = read(store, "TI101", yesterday - 1, today + 10)
        assert got.ts.tolist() == expected and got.value.tolist()[2:] == [5.0, 7.0] and np.isnan(got.value[1])
        assert read(store, "PI102", yesterday - 1, today + 10).value.tolist() == [2.0, 6.0, 8.0]
        history = History.open(store.path)
        try:
            assert [event.ts for event in history.events(yesterday, today + 10)] == [yesterday + 2, today + 2]
        finally:
            history.close()
        assert compact(store._conn, store.keeping, NOW, force=True) == 5
        assert staged(store) == 0
        assert read(store, "TI101", yesterday - 1, today + 10).ts.tolist() == expected, "nothing lost or doubled"
        store.keeping = Keeping(keep=(time.time() - MIDNIGHT) / 2)  # yesterday is past its keep, today not
        assert store.drop_history() == 1
        assert read(store, "TI101", yesterday - 1, today + 10).ts.tolist() == expected[2:]
        tables = {name for (name,) in store._conn.execute("SELECT name FROM sqlite_master")}
        assert samples_table(day_of(yesterday)) not in tables and events_table(day_of(yesterday)) not in tables
    finally:
        store.close()


def test_a_backlog_is_compacted_a_piece_at_a_time_once_it_takes_piece_bytes(store: Store, monkeypatch) -> None:
    tags = store.tag_ids([f"T{i}" for i in range(100)])
    one_block = len(pack(block(tags, np.full(100, MIDNIGHT), np.zeros(100))))
    monkeypatch.setattr(compaction, "PIECE_BYTES", 2 * one_block)
    store.keep_history = lambda: None  # the upkeep after each append is called below, by hand
    for second in range(5):  # a backlog spanning 4 s, far under the compaction span
        store.append(block(tags, np.full(100, MIDNIGHT + second), np.full(100, float(second))), [])
    assert compact(store._conn, store.keeping, NOW) == 200, "due by its bytes: the oldest piece of two blocks"
    assert compact(store._conn, store.keeping, NOW) == 200
    assert compact(store._conn, store.keeping, NOW) == 0, "one block left: under the piece, under the span"
    assert staged(store) == 1
    assert read(store, "T7", MIDNIGHT, MIDNIGHT + 10).value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted({k for k, _ in chunk_rows(store, day_of(MIDNIGHT))}) == [1, 2]


def test_a_piece_is_taken_portion_by_portion_up_to_piece_bytes_exactly(store: Store, monkeypatch) -> None:
    tags = store.tag_ids([f"T{i}" for i in range(100)])
    one_block = len(pack(block(tags, np.full(100, MIDNIGHT), np.zeros(100))))
    alarms = [Event("alarm", MIDNIGHT + second, "T1", "high", Priority.HIGH, {}) for second in range(3)]
    one_event = len(event_body(alarms[0]).encode())
    monkeypatch.setattr(compaction, "PIECE_BYTES", 3 * one_block + 2 * one_event)
    monkeypatch.setattr(compaction, "PORTION_BYTES", one_event)  # every row a portion of its own
    store.keep_history = lambda: None
    synchronous = store._conn.execute("PRAGMA synchronous").fetchone()
    for second in range(3):
        store.append(block(tags, np.full(100, MIDNIGHT + second), np.full(100, float(second))), [alarms[second]])
    assert compact(store._conn, store.keeping, NOW, force=True) == 300 + 2, \
        "3 blocks and the 2 events between them are PIECE_BYTES exactly: the third event waits"
    assert staged(store) == 1
    assert compact(store._conn, store.keeping, NOW, force=True) == 1
    assert read(store, "T99", MIDNIGHT, MIDNIGHT + 10).value.tolist() == [0.0, 1.0, 2.0]
    monkeypatch.setattr(compaction, "PIECE_BYTES", one_block // 3)
    store.append(block(tags, np.full(100, MIDNIGHT + 5), np.full(100, 5.0)), [])
    store.append(block(tags, np.full(100, MIDNIGHT + 6), np.full(100, 6.0)), [])
    assert compact(store._conn, store.keeping, NOW) == 100, "a block larger than a piece is taken alone"
    assert compact(store._conn, store.keeping, NOW) == 100
    assert read(store, "T0", MIDNIGHT, MIDNIGHT + 10).value.tolist() == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert store._conn.execute("PRAGMA synchronous").fetchone() == synchronous, "the store's own setting again"


def test_a_chunk_is_in_time_order_and_gets_device_times_from_a_later_block(store: Store) -> None:
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    t = MIDNIGHT + 3000.0
    commit(store, block([a, b], [t + 5, t + 5], [1.0, 2.0]))
    commit(store, block([b, a], [t + 1, t + 1], [3.0, 4.0], source_ts=np.array([np.nan, t])))  # clock stepped back
    compact(store._conn, store.keeping, NOW, force=True)
    rows = store._conn.execute(f"SELECT id, layout, body FROM {chunks_table(day_of(t))} ORDER BY id").fetchall()
    (key_a, layout_a, body_a), (key_b, layout_b, body_b) = rows
    assert (key_a & 0xFFFFFFFF, key_b & 0xFFFFFFFF) == (a, b)
    assert layout_a == NARROW_DEVICE_TIMES and layout_b == NARROW_TIMES
    ts, value, _, source = unpack(layout_a, body_a)
    assert ts.tolist() == [t + 1, t + 5] and value.tolist() == [4.0, 1.0] and source[0] == t and np.isnan(source[1])
    assert unpack(layout_b, body_b)[1].tolist() == [3.0, 2.0]


def test_a_crash_after_a_first_portion_is_deleted_rolls_the_whole_piece_back(store: Store, monkeypatch) -> None:
    tags = store.tag_ids([f"T{i}" for i in range(100)])
    one_block = len(pack(block(tags, np.full(100, MIDNIGHT), np.zeros(100))))
    monkeypatch.setattr(compaction, "PORTION_BYTES", one_block)
    for second in range(3):
        commit(store, block(tags, np.full(100, MIDNIGHT + second), np.full(100, float(second))))
    calls = []

    def dies_at_the_third_block(piece, body):
        calls.append(body)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")  # two portions read and deleted before
        add_block(piece, body)

    add_block = compaction._Piece.add_block
    monkeypatch.setattr(compaction._Piece, "add_block", dies_at_the_third_block)
    with pytest.raises(sqlite3.OperationalError):
        compact(store._conn, store.keeping, NOW, force=True)
    assert staged(store) == 3 and store.stats().history_days == 0, "rolled back whole"
    monkeypatch.undo()
    assert compact(store._conn, store.keeping, NOW, force=True) == 300
    assert read(store, "T5", MIDNIGHT, MIDNIGHT + 10).value.tolist() == [0.0, 1.0, 2.0]


def test_chunks_of_the_wide_layouts_written_before_read_beside_narrow_ones(store: Store) -> None:
    (a,) = store.tag_ids(["TI101"]).tolist()
    t = MIDNIGHT + 7000.0
    commit(store, block([a, a], [t, t + 1], [1.0, 2.0]))
    compact(store._conn, store.keeping, NOW, force=True)
    table = chunks_table(day_of(t))
    old = np.array([(t, 1.0, 0), (t + 1, 2.0, 0)], [("ts", "<f8"), ("value", "<f8"), ("quality", "u1")])
    store._conn.execute(f"UPDATE {table} SET layout = ?, body = ?", (TIMES, old.tobytes()))  # as gatewayd wrote it
    commit(store, block([a], [t + 2], [3.0]))
    compact(store._conn, store.keeping, NOW, force=True)
    assert [layout for (layout,) in store._conn.execute(f"SELECT layout FROM {table} ORDER BY id")] == \
        [TIMES, NARROW_TIMES]
    got = read(store, "TI101", t, t + 10)
    assert got.value.dtype == np.float64 and got.value.tolist() == [1.0, 2.0, 3.0]
