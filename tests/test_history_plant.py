"""30 days of a 1,000-tag plant kept in history: the bound holds and the oldest day goes first.

The samples are committed a block per hour of the plant, each commit followed by history's upkeep as
`Store.append` does it (bench/bench_history.py: compaction into the days' chunks, day drops). Each tag
reports once per 30 minutes here, to keep the test short; `make bench` runs the same at one sample a
minute, committed every minute, with the timings (bench_history).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bench.bench_history import fill_day, plant
from core.types import Event
from store import History, Keeping, Store
from store.history import DAY, chunks_table, day_of, day_name
from tests.uplinkschemas import event_problems

TAGS, INTERVAL, DAYS, TICK = 1000, 1800.0, 30, 3600.0
PER_DAY = TAGS * int(DAY / INTERVAL)


def dropped_events(store: Store) -> list[Event]:
    """The history_dropped events, from history itself: it keeps every event committed (they went upstream too)."""
    history = History.open(store.path)
    try:
        return [event for event in history.events(0, time.time() + DAY) if event.kind == "history_dropped"]
    finally:
        history.close()


def kept_days(store: Store) -> list[int]:
    history = History.open(store.path)
    try:
        return [info.day for info in history.days()]
    finally:
        history.close()


def table_pages(path: Path, day: int) -> int:
    """Pages of a day's tables counted by SQLite's dbstat: what history_days.bytes must match."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN (?, ?)",
                            (chunks_table(day), f"history_events_{day_name(day)}")).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def plant_store(tmp_path: Path):
    store = Store.open(tmp_path / "gatewayd.db", "normal")  # an fsync per hour of the plant is not the point here
    plant(store, TAGS)
    yield store
    store.close()


def test_thirty_days_stay_within_the_bound_and_the_oldest_day_goes_first(plant_store: Store) -> None:
    store = plant_store
    today = day_of(time.time())
    days = list(range(today - DAYS + 1, today + 1))
    assert fill_day(store, days[0], TAGS, INTERVAL, tick=TICK) == PER_DAY
    one_day = store.stats().history_bytes
    assert one_day == table_pages(store.path, days[0]), "a day's bytes are its tables' pages, counted as filled"
    bound = int(one_day * 10.5)
    store.keeping = Keeping(keep=(DAYS + 1) * DAY, max_bytes=bound)
    for day in days[1:]:
        fill_day(store, day, TAGS, INTERVAL, tick=TICK)
        stats = store.stats()
        kept = kept_days(store)
        assert stats.history_bytes <= bound
        assert [d for d in kept if d <= day] == list(range(kept[0], day + 1)), "the newest days, without holes"
        assert set(kept) - set(range(kept[0], day + 1)) <= {today}, "today holds the history_dropped events"
    assert kept[-1] == today and len(kept) in (10, 11)
    first_kept = kept[0]
    if len(kept) == 11:  # the oldest is being dropped, a step of chunks per append
        assert len(History.open(store.path).samples("TAG00500", kept[0] * DAY, (kept[0] + 1) * DAY)) < DAY / INTERVAL
        kept = kept[1:]
    assert store.used_bytes() < store.stats().history_bytes / 50, "the outbox's own budget does not count history"

    events = dropped_events(store)
    assert [event.data["day"] for event in events] == [day_name(day) for day in days[:len(events)]], \
        "oldest first"
    assert len(events) in (19, 20)
    assert {event.data["reason"] for event in events} == {"max_bytes"}
    assert {event.data["samples"] for event in events} == {PER_DAY}
    assert {event.priority for event in events} == {2}
    assert events[0].data["start_ts"] == days[0] * DAY * 1000
    assert event_problems(events) == []

    history = History.open(store.path)
    try:
        trend = history.samples("TAG00500", kept[0] * DAY, (today + 1) * DAY)
        assert len(trend) == 10 * DAY / INTERVAL
        assert (trend.ts[1:] > trend.ts[:-1]).all()
        assert len(history.samples("TAG00500", days[0] * DAY, first_kept * DAY)) == 0, "dropped days are gone"
    finally:
        history.close()


def test_days_past_keep_are_dropped_oldest_first_with_their_reason(plant_store: Store) -> None:
    store = plant_store
    today = day_of(time.time())
    for day in range(today - 4, today + 1):
        fill_day(store, day, TAGS, INTERVAL * 4, tick=TICK)
    store.keeping = Keeping(keep=2 * DAY)  # today and the two days before it at most
    dropped, calls = 0, 0
    while kept_days(store)[0] < today - 2 and calls < 100:
        dropped, calls = dropped + store.drop_history(), calls + 1
    assert dropped == 2 and calls > 2, "dropped in steps of chunks, over as many calls as it takes"
    assert kept_days(store) == [today - 2, today - 1, today]
    events = dropped_events(store)
    assert [(event.data["day"], event.data["reason"], event.priority) for event in events] == [
        (day_name(today - 4), "keep", 0), (day_name(today - 3), "keep", 0)]
    assert event_problems(events) == []
    assert store.drop_history() == 0
