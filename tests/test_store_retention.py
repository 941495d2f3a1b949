"""Disk budget, gap records, live batches during a backfill, the full-disk spill and the clock guard."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.values.clock import ClockGuard
from core.types import Event, Priority, Quality
from store import BatchContent, Retention, SampleBlock, Store, is_disk_full
from store.spill import Spill
from storechain import chain_head
from tests.uplinkschemas import event_problems

TAGS = ["T0", "T1", "T2", "T3"]


def samples(ids: np.ndarray, start: float, count: int, step: float = 1.0) -> SampleBlock:
    """`count` samples per tag, tag after tag at each time step, from `start`."""
    ts = np.repeat(start + step * np.arange(count), len(ids))
    tag = np.tile(ids, count)
    return SampleBlock(tag, ts, ts * 0.5, np.zeros(len(ts)), np.full(len(ts), np.nan))


class Keep:
    """An encoder that keeps each batch's content by seq."""

    def __init__(self) -> None:
        self.carried: dict[int, BatchContent] = {}

    def __call__(self, content: BatchContent, seq: int, prev_hash: bytes) -> bytes:
        self.carried[seq] = content
        return f"batch {seq}".encode()


def drain(store: Store, keep: Keep, rows: int = 1000) -> None:
    while (batch := store.build_batch(rows, keep)) is not None:
        store.acknowledge(batch.seq)


def gaps(keep: Keep) -> list[dict]:
    return [event.data for content in keep.carried.values() for event in content.events if event.kind == "gap"]


def received_samples(keep: Keep) -> list[tuple[str, float]]:
    return [(content.tag_names[t], ts) for content in keep.carried.values()
            for t, ts in zip(content.samples.tag_id.tolist(), content.samples.ts.tolist())]


@pytest.mark.parametrize("thinning", [0.0, 10.0])
def test_budget_evicts_samples_never_events_and_gap_records_account_for_all(tmp_path: Path, thinning) -> None:
    budget = 300_000  # bytes: about 7,500 samples in blocks, 60 events, the empty schema's 53 kB
    store = Store.open(tmp_path / "g.db", "normal", Retention(budget, thinning))
    ids = store.tag_ids(TAGS)
    appended, alarms = 0, 0
    for tick in range(60):
        block = samples(ids, tick * 100.0, 100)
        store.append(block, [Event("alarm", tick * 100.0, "T0", f"alarm {tick}", Priority.HIGH)])
        appended += len(block)
        alarms += 1
        assert store.used_bytes() <= budget * 1.1, "a tick may overshoot a little, never run away"
    stats = store.stats()
    assert stats.evicted > 0 and stats.gap_records > 0
    keep = Keep()
    drain(store, keep)
    events = [e for c in keep.carried.values() for e in c.events]
    assert sum(e.kind == "alarm" for e in events) == alarms, "events are never evicted"
    assert event_problems(e for e in events if e.kind == "gap") == [], "docs/schemas/events/gap.json"
    records = gaps(keep)
    assert len(records) == stats.gap_records
    evicted = sum(record["samples"] for record in records)
    assert evicted == stats.evicted
    got = received_samples(keep)
    assert len(got) + evicted == appended, "every sample arrived or is counted in a gap record"
    assert len(set(got)) == len(got)
    per_tag = {name: 0 for name in TAGS}
    for record in records:
        assert record["first_ts"] <= record["last_ts"] and "disk budget" in record["reason"]
        for name, (count, first, last) in record["tags"].items():
            per_tag[name] += count
            assert first <= last
    assert sum(per_tag.values()) == evicted
    arrived = {name: sum(1 for tag, _ in got if tag == name) for name in TAGS}
    assert all(arrived[name] + per_tag[name] == appended // len(TAGS) for name in TAGS), "accounted per tag"
    if thinning:
        assert records[0]["action"] == "thinned" and records[0]["keep_one_per_seconds"] == thinning
        # the oldest range was thinned, not cut: its survivors are one per tag per 10 s window
        oldest = sorted(ts for tag, ts in got if tag == "T0")[:5]
        assert oldest == [0.0, 10.0, 20.0, 30.0, 40.0]
    else:
        assert {record["action"] for record in records} == {"evicted"}
        assert min(ts for _, ts in got) > 0.0, "the oldest went first"
    store.close()


def test_rows_in_built_batches_are_never_evicted(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal", Retention(150_000))
    ids = store.tag_ids(TAGS)
    store.append(samples(ids, 0.0, 500), [])
    keep = Keep()
    built = store.build_batch(2000, keep)
    for tick in range(1, 40):
        store.append(samples(ids, tick * 1000.0, 500), [])
    assert store.acknowledge(built.seq) == 2000, "the built batch kept all its rows"
    store.close()


def test_newest_batches_interleave_without_loss_or_duplicate(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal", block_samples=len(TAGS))  # a block per time step
    ids = store.tag_ids(TAGS)
    store.append(samples(ids, 0.0, 250), [])  # 1000 rows of backlog
    keep = Keep()
    first = store.build_batch(100, keep)
    live = store.build_batch(100, keep, newest=True)
    assert keep.carried[live.seq].samples.ts.min() == 225.0, "the newest 100 rows"
    assert live.seq == first.seq + 1
    assert store.stats().rows_pending == 800 and store.stats().rows_inflight == 200
    store.acknowledge(live.seq)
    store.append(samples(ids, 1000.0, 10), [])
    second = store.build_batch(100, keep)
    assert keep.carried[second.seq].samples.ts.min() == 25.0, "backfill goes on where it was"
    drain(store, keep, 300)
    store.acknowledge(first.seq)
    store.acknowledge(second.seq)
    got = received_samples(keep)
    assert len(got) == len(set(got)) == 1040
    assert store.stats().rows_pending == store.stats().rows_inflight == 0
    store.close()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 8)),
        st.tuples(st.just("build"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_any_mix_of_oldest_and_newest_batches_carries_each_row_once(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.db"
        store = Store.open(path, "normal")
        ids = store.tag_ids(["A"])
        keep, appended, clock = Keep(), [], 0.0
        for op in ops:
            if op[0] == "append":
                if op[1]:
                    store.append(samples(ids, clock, op[1]), [])
                    appended += [clock + i for i in range(op[1])]
                clock += 100
            elif op[0] == "build":
                before = chain_head(store)[0]
                batch = store.build_batch(op[1], keep, newest=op[2])
                assert batch is None or batch.seq == before + 1
            elif op[0] == "ack":
                pending = store.pending_batches()
                if pending:
                    store.acknowledge(pending[op[1] % len(pending)].seq)
            else:
                store.close()
                store = Store.open(path, "normal")
        while store.build_batch(3, keep) is not None:
            pass
        for batch in store.pending_batches():
            store.acknowledge(batch.seq)
        assert store.stats().rows_pending == store.stats().rows_inflight == 0
        store.close()
    carried = [ts for content in keep.carried.values() for ts in content.samples.ts.tolist()]
    assert sorted(carried) == appended, "every row exactly once"
    for content in keep.carried.values():
        assert content.samples.ts.tolist() == sorted(content.samples.ts.tolist()), "in order within a batch"


def test_events_are_committed_with_synchronous_full_even_when_normal(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal")
    seen = []
    store._conn.set_trace_callback(lambda sql: seen.append(sql) if "synchronous" in sql else None)
    store.append(samples(store.tag_ids(["A"]), 0.0, 3), [])
    assert seen == []
    store.append(None, [Event("alarm", 1.0, "A", "x")])
    assert seen == ["PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL"]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()


def test_acknowledgements_are_committed_without_waiting_for_the_disk(tmp_path: Path) -> None:
    """A lost acknowledgement only sends its batch again (same seq, same bytes): no fsync is spent on it."""
    store = Store.open(tmp_path / "g.db")
    seen = []
    store._conn.set_trace_callback(lambda sql: seen.append(sql) if "synchronous" in sql else None)
    store.append(samples(store.tag_ids(["A"]), 0.0, 3), [])
    batch = store.build_batch(10, Keep())
    assert seen == [], "appends and batches are committed as configured (FULL)"
    assert store.acknowledge(batch.seq) == 3
    assert seen == ["PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


def test_the_budget_is_measured_once_per_sixty_fourth_of_it_appended(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal", Retention(64 * 21_000))  # 21 kB a step: 1,000 samples
    measured = []
    store._conn.set_trace_callback(lambda sql: measured.append(sql) if "freelist_count" in sql else None)
    ids = store.tag_ids(TAGS)
    for _ in range(7):
        store.append(samples(ids, 0.0, 60), [])  # 240 samples, 5,046 bytes a block
    assert len(measured) == 2, "at the first append, then once 21,000 bytes more had been appended (the 6th)"
    store.close()


def fill_up(store: Store) -> None:
    """Make SQLite itself answer SQLITE_FULL, as a full filesystem does: no new page, no room left in any."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    ids = store.tag_ids(["filler"])
    with pytest.raises(sqlite3.OperationalError) as info:
        for _ in range(100_000):
            store.append(SampleBlock(ids, [0.0], [0.0], [0], [np.nan]), [])
    assert is_disk_full(info.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_disk_keeps_ticks_in_memory_then_commits_them_with_the_outage_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal")
    ids = store.tag_ids(TAGS)
    clock = Clock()
    spill = Spill(store, max_samples=400, retry_interval=1.0, monotonic=clock, wall=clock)
    spill.append(samples(ids, 0.0, 5), [])
    fill_up(store)
    filler = store._conn.execute("SELECT sum(rows) FROM outbox").fetchone()[0] - 20
    for tick in range(1, 201):  # 800 samples and 20 alarms while full: more than the spill holds
        clock.now += 0.5
        events = [Event("alarm", clock.now, "T1", f"alarm {tick}", Priority.HIGH)] if tick % 10 == 0 else []
        spill.append(samples(ids, float(tick), 1), events)
    assert spill.stats.failing and spill.stats.failures >= 90
    assert spill.stats.waiting_samples <= 400 and spill.stats.dropped_samples == 400
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    clock.now += 2.0
    spill.append(None, [])
    assert not spill.stats.failing and spill.stats.waiting_samples == 0
    keep = Keep()
    drain(store, keep)
    events = [e for c in keep.carried.values() for e in c.events]
    kinds = [e.kind for e in events]
    assert kinds[0] == "store_full" and kinds[-1] == "store_resumed"
    assert kinds.count("alarm") == 20, "events are never dropped"
    assert event_problems(e for e in events if e.kind != "alarm") == [], "store_full, gap, store_resumed"
    assert events[0].ts == 1000.5, "the outage event carries the time it began"
    (gap,) = gaps(keep)
    assert gap["action"] == "dropped" and gap["samples"] == 400
    assert sum(count for count, _, _ in gap["tags"].values()) == 400
    assert len(received_samples(keep)) == 20 + filler + 400
    resumed = events[-1].data
    assert (resumed["kept"], resumed["dropped"]) == (400, 400)
    store.close()


def test_other_store_errors_are_not_swallowed(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db")
    spill = Spill(store)
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        spill.append(None, [Event("x", 1.0, "s", "m")])


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[SampleBlock | None, list[Event]]] = []

    def append(self, samples, events) -> None:
        self.calls.append((samples, list(events)))


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_clock_step_is_reported_and_samples_flagged_for_the_hold(step: float) -> None:
    wall, mono, sink = Clock(), Clock(), Sink()
    guard = ClockGuard(sink, threshold=2.0, hold=60.0, wall=wall, monotonic=mono)

    def tick(seconds: float = 1.0):
        wall.now += seconds
        mono.now += seconds
        block = SampleBlock([1, 2], [wall.now] * 2, [1.0, 2.0], [Quality.GOOD, Quality.COMM_FAILURE], [np.nan] * 2)
        guard.append(block, [])
        return sink.calls[-1]

    assert tick()[0].quality.tolist() == [0, 17]
    wall.now += step
    block, events = tick()
    assert [e.kind for e in events] == ["clock_jump"] and events[0].data["step_seconds"] == step
    assert event_problems(events) == []
    assert block.quality.tolist() == [Quality.CLOCK_UNSYNCED, Quality.COMM_FAILURE], "bad reasons are kept"
    for _ in range(58):
        assert tick()[0].quality.tolist()[0] == Quality.CLOCK_UNSYNCED
    tick(2.0)
    assert tick()[0].quality.tolist() == [0, 17], "steady again after the hold"
    assert guard.jumps == 1


def test_slow_drift_is_not_a_step() -> None:
    wall, mono, sink = Clock(), Clock(), Sink()
    guard = ClockGuard(sink, wall=wall, monotonic=mono)
    for _ in range(100):
        wall.now += 1.001  # an NTP slew is far slower than this
        mono.now += 1.0
        guard.append(None, [])
    assert guard.jumps == 0 and all(not events for _, events in sink.calls)


def test_gap_event_body_is_json(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db", "normal", Retention(100_000))
    ids = store.tag_ids(TAGS)
    for tick in range(30):
        store.append(samples(ids, tick * 1000.0, 1000), [])
    body = store._conn.execute("SELECT body FROM outbox WHERE kind = 1 LIMIT 1").fetchone()[0]
    assert json.loads(body)["kind"] == "gap"
    store.close()


def test_an_acknowledgement_does_not_write_the_pages_it_frees(tmp_path) -> None:
    """Acknowledging frees a batch's blocks and envelope (overflow pages, tens of them); SQLite builds whose
    secure_delete defaults to ON (Debian's) zeroed each and wrote it to the WAL once more."""
    store = Store.open(tmp_path / "g.db")
    try:
        size = 5000
        store.append(SampleBlock(np.arange(size) % 50 + 1, np.full(size, 1.7e9), np.arange(size, dtype=float),
                                 np.zeros(size), np.full(size, np.nan)), [])
        batch = store.build_batch(size, lambda content, seq, prev: np.random.default_rng(1).bytes(40_000))
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert store.acknowledge(batch.seq) == size
        _, frames, _ = store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames < 20, f"{frames} pages written to acknowledge {batch.rows} samples in 5 blocks"
    finally:
        store.close()
