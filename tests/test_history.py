"""Local history: every committed row is kept, compacted into its day; queries read days and staged rows as one."""

from __future__ import annotations

import csv
import sqlite3
import time
from datetime import datetime, UTC
from pathlib import Path

import numpy as np
import pytest

from core.types import Event, Priority
from gatewayd.cli import main
from gatewayd.commissioning.historysize import history_size
from gatewayd.config import parse_config
from gatewayd.config.jsonschema import config_schema
from gatewayd.config.model import HistoryConfig
from gatewayd.operator.history import iso
from store import History, HistoryError, Keeping, SampleBlock, Store
from store.compaction import compact
from store.history import DAY, chunks_table, day_of
from store.keeping import BYTES_PER_SAMPLE

CONFIGS = Path(__file__).parent / "configs"

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


def test_committed_rows_are_in_history_acknowledged_or_not_and_compacted_into_their_days(store: Store) -> None:
    a, b = store.tag_ids(["TI101", "PI102"]).tolist()
    yesterday, today = TODAY - 600.0, TODAY + 5.0
    store.append(samples([a, b, a], [yesterday, yesterday, today], [1.0, 2.0, np.nan], quality=17), [])
    send_all(store)
    store.append(samples([a], [today + 1], [4.0]), [])  # committed, not acknowledged: still in the outbox too

    history = History.open(store.path)
    try:
        for compacted in (False, True):
            trend = history.samples("TI101", TODAY - DAY, TODAY + DAY)
            assert trend.ts.tolist() == [yesterday, today, today + 1], f"compacted {compacted}"
            assert np.isnan(trend.value[1]) and trend.value[[0, 2]].tolist() == [1.0, 4.0]
            assert trend.quality.tolist() == [17, 17, 0]
            assert history.samples("TI101", today, today + 1).ts.tolist() == [today], "end is exclusive"
            compact(store._conn, store.keeping, NOW, force=True)
        assert [day.day for day in history.days()] == [day_of(yesterday), day_of(today)]
        assert [day.samples for day in history.days()] == [2, 2]
        assert history.tags() == ["PI102", "TI101"]
    finally:
        history.close()
    keys = sqlite3.connect(store.path).execute(f"SELECT id FROM {chunks_table(day_of(yesterday))}").fetchall()
    assert sorted(key & 0xFFFFFFFF for (key,) in keys) == sorted([a, b]), "one chunk per tag of the day"


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


def test_history_command_prints_and_exports_between_iso_and_epoch_times(store: Store, capsys) -> None:
    (a,) = store.tag_ids(["TI101"]).tolist()
    store.append(samples([a, a, a], [TODAY + 1, TODAY + 2.5, TODAY + 4], [1.5, np.nan, 3.0]), [])
    send_all(store)
    start = datetime.fromtimestamp(TODAY + 1, UTC).isoformat()  # ...T00:00:01+00:00
    assert main(["history", "TI101", "--db", str(store.path), "--from", start, "--to", str(TODAY + 4)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [[iso(TODAY + 1), "1.5", "GOOD"], [iso(TODAY + 2.5), "-", "GOOD"]]
    assert main(["history", "TI101", "--db", str(store.path), "--from", str(TODAY), "--to", str(TODAY + 5),
                 "--csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["time", "epoch", "value", "quality", "quality_name"]
    assert [row[1:4] for row in rows[1:]] == [[f"{TODAY + 1:.3f}", "1.5", "0"], [f"{TODAY + 2.5:.3f}", "", "0"],
                                              [f"{TODAY + 4:.3f}", "3.0", "0"]]


@pytest.mark.parametrize("args, status, message", [
    (["NOPE", "--from", "0"], 1, "unknown tag 'NOPE'"),
    (["TI101", "--from", "2026-12-01T10:00Z", "--to", "2026-12-01T09:00Z"], 1, "must end after it starts"),
    (["TI101", "--from", "yesterday"], 2, "'yesterday' is not a time: give ISO 8601"),
    (["TI101", "--from", "nan"], 2, "'nan' is not a time"),
])
def test_history_command_refuses_an_unknown_tag_and_a_bad_range(store: Store, capsys, args, status, message) -> None:
    store.tag_ids(["TI101"])
    assert main(["history", *args, "--db", str(store.path)]) == status
    assert message in capsys.readouterr().err


def test_history_command_names_a_store_it_cannot_read(tmp_path: Path, capsys) -> None:
    assert main(["history", "TI101", "--db", str(tmp_path / "none.db"), "--from", "0"]) == 1
    assert f"cannot read the store {tmp_path / 'none.db'}" in capsys.readouterr().err


def test_history_keys_are_read_and_check_config_says_how_many_days_the_bound_holds(tmp_path: Path, capsys) -> None:
    source = (CONFIGS / "good" / "minimal.yaml").read_text()
    assert parse_config(source, tmp_path / "c.yaml").history == HistoryConfig(30 * DAY, 4 << 30)
    config = parse_config(source + "history: {keep: 10d, max_bytes: 64 MiB}\n", tmp_path / "c.yaml")
    assert config.history == HistoryConfig(10 * DAY, 64 << 20)
    size = history_size(config)
    # 3 tags polled every second, max_interval 60 s: 3 x 1,440 samples a day held still, 3 x 86,400 moving
    assert (size.samples_per_day_still, size.samples_per_day_busy) == (4320, 259_200)
    assert round(size.days_still, 1) == round((64 << 20) / (4320 * BYTES_PER_SAMPLE), 1) == 575.4
    assert round(size.days_busy, 1) == 9.6
    summary = size.summary()
    assert "holds 575.4 days at 3 tags while values hold still" in summary and "9.6 days if every read" in summary
    assert "the bound is reached before history.keep if values move" in summary
    path = tmp_path / "c.yaml"
    path.write_text(source + "history: {keep: 10d, max_bytes: 64 MiB}\n")
    assert main(["check-config", str(path)]) == 0
    assert summary in capsys.readouterr().out
    every_read = parse_config(source.replace("        unit: m\n", "        unit: m\n        report: every_read\n"),
                              tmp_path / "c.yaml")
    assert history_size(every_read).samples_per_day_still == 86_400 + 2 * 1440


def test_history_keys_are_in_the_json_schema() -> None:
    keys = config_schema()["properties"]["history"]["anyOf"][0]["properties"]
    assert set(keys) == {"keep", "max_bytes"}


def test_trend_cuts_a_range_into_spans_with_counts_bad_counts_and_extremes(store: Store) -> None:
    (a,) = store.tag_ids(["TI101"]).tolist()
    store.append(samples([a] * 4, [TODAY + 0, TODAY + 1, TODAY + 2, TODAY + 5], [3.0, 7.0, 5.0, 9.0]), [])
    send_all(store)
    store.append(SampleBlock([a, a], [TODAY + 6, TODAY + 9.5], [np.nan, 1.0], [17, 0], [np.nan, np.nan]), [])
    history = History.open(store.path)
    try:
        trend = history.trend("TI101", TODAY, TODAY + 10, 4)  # spans of 2.5 s; the last two rows still unsent
        assert trend.width == 2.5 and trend.start.tolist() == [TODAY, TODAY + 2.5, TODAY + 5, TODAY + 7.5]
        assert trend.count.tolist() == [3, 0, 2, 1]
        assert trend.bad.tolist() == [0, 0, 1, 0]
        assert trend.low.tolist()[:1] + trend.low.tolist()[2:] == [3.0, 9.0, 1.0] and np.isnan(trend.low[1])
        assert trend.high.tolist()[:1] + trend.high.tolist()[2:] == [7.0, 9.0, 1.0] and np.isnan(trend.high[1])
        with pytest.raises(HistoryError, match="buckets must be at least 1"):
            history.trend("TI101", TODAY, TODAY + 10, 0)
    finally:
        history.close()
