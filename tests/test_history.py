"""Local history: acknowledged rows move into their day, queries see history and outbox as one."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from core.types import Event, Priority
from store import History, HistoryError, Keeping, SampleBlock, Store
from store.history import DAY, day_of, samples_table

NOW = time.time()
TODAY = day_of(NOW) * DAY  # the tests' rows fall on today and yesterday: inside any keep of 2 days or more


def encode(content, seq, prev_hash) -> bytes:
    return b"batch %d" % seq


def samples(tag_ids, ts, values, quality=0) -> SampleBlock:
    n = len(tag_ids)
    return SampleBlock(tag_ids, ts, values, np.full(n, quality), np.full(n, np.nan))


def send_all(store: Store) -> None:
    while (batch := store.build_batch(3, encode)) is not None:
        store.acknowledge(batch.seq)


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(tmp_path / "gatewayd.db")
    yield store
    store.close()


def test_acknowledged_rows_move_to_their_day_and_a_query_reads_history_and_outbox_together(store: Store) -> None:
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    yesterday, today = TODAY - 600.0, TODAY + 5.0
    store.append(samples([a, b, a], [yesterday, yesterday, today], [1.0, 2.0, np.nan], quality=17), [])
    send_all(store)
    store.append(samples([a], [today + 1], [4.0]), [])  # committed, not acknowledged: still in the outbox

    history = History.open(store.path)
    try:
        trend = history.samples("TI101", TODAY - DAY, TODAY + DAY)
        assert trend.ts.tolist() == [yesterday, today, today + 1]
        assert np.isnan(trend.value[1]) and trend.value[[0, 2]].tolist() == [1.0, 4.0]
        assert trend.quality.tolist() == [17, 17, 0]
        assert [day.day for day in history.days()] == [day_of(yesterday), day_of(today)]
        assert [day.samples for day in history.days()] == [2, 1]
        assert history.samples("TI101", today, today + 1).ts.tolist() == [today], "end is exclusive"
        assert history.tags() == ["PI102", "TI101"]
    finally:
        history.close()
    rows = sqlite3.connect(store.path).execute(f"SELECT tag_id, ts FROM {samples_table(day_of(yesterday))}")
    assert sorted(rows) == sorted([(a, yesterday), (b, yesterday)])


def test_events_come_from_history_and_outbox_in_time_order(store: Store) -> None:
    first = Event("alarm", TODAY + 1, "TI101", "high", Priority.HIGH, {"value": 91.0})
    second = Event("audit", TODAY + 2, "TI101", "ack", Priority.INFO, {"user": "op"})
    store.append(None, [first])
    send_all(store)
    store.append(None, [second])
    history = History.open(store.path)
    try:
        assert history.events(TODAY, TODAY + 10) == [first, second]
        assert history.events(TODAY + 1.5, TODAY + 10) == [second]
    finally:
        history.close()


def test_unknown_tag_and_reversed_range_are_refused_by_name(store: Store) -> None:
    store.tag_ids(["TI101"])
    history = History.open(store.path)
    try:
        with pytest.raises(HistoryError, match="unknown tag 'XX1'"):
            history.samples("XX1", TODAY, TODAY + 1)
        with pytest.raises(HistoryError, match="must end after it starts"):
            history.samples("TI101", TODAY + 1, TODAY)
        with pytest.raises(HistoryError, match="must end after it starts"):
            history.events(TODAY, TODAY)
    finally:
        history.close()


def test_a_reader_cannot_write(store: Store) -> None:
    history = History.open(store.path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            history._conn.execute("DELETE FROM outbox")
    finally:
        history.close()


def test_keep_zero_keeps_no_history(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gatewayd.db", keeping=Keeping(keep=0))
    (a,) = store.tag_ids(["TI101"]).tolist()
    store.append(samples([a], [TODAY], [1.0]), [])
    send_all(store)
    assert store.stats().history_days == 0
    assert len(History.open(store.path).samples("TI101", TODAY - 1, TODAY + 1)) == 0
