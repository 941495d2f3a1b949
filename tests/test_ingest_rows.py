"""gatewayd-ingest's pure parts: a decoded body as table rows, refused whole when a value would not fit the
tables, and every command of the CLI documented in docs/platform.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.cli import parser
from ingest.rows import INT64_MAX, UnstorableBody, body_rows
from ingest.schema import DAY_MS, partition_name

ROOT = Path(__file__).resolve().parent.parent


def body(ts: list[int], source_ts: list[int | None] | None = None, events: list[dict] | None = None) -> dict:
    return {"tags": ["PT-1", "PT-2"], "samples": {
        "tag": [i % 2 for i in range(len(ts))], "ts": ts, "value": [1.5] * len(ts), "quality": [0] * len(ts),
        "source_ts": source_ts or [None] * len(ts)}, "events": events or []}


def event(**changes) -> dict:
    return {"ts": 5, "kind": "alarm", "source": "PT-1", "priority": 3, "message": "high", "data": {"x": 1},
            **changes}


def test_rows_follow_the_columns_and_name_their_days():
    rows = body_rows(body([DAY_MS - 1, DAY_MS], [None, 7], [event()]))
    assert rows.samples == [("PT-1", DAY_MS - 1, 1.5, 0, None), ("PT-2", DAY_MS, 1.5, 0, 7)]
    assert rows.events == [(5, "alarm", "PT-1", 3, "high", '{"x": 1}')]
    assert rows.days == {0, 1}


@pytest.mark.parametrize(("case", "good"), [
    (body([INT64_MAX]), True),
    (body([INT64_MAX + 1]), False),
    (body([-INT64_MAX - 1]), True),
    (body([-INT64_MAX - 2]), False),
    (body([1], [INT64_MAX + 1]), False),
    (body([1], events=[event(ts=INT64_MAX + 1)]), False),
    (body([1], events=[event(priority=2**31 - 1)]), True),
    (body([1], events=[event(priority=2**31)]), False),
    (body([1], events=[event(message="a\x00b")]), False),
    (body([1], events=[event(data={"note": "a\x00b"})]), False),
    ({**body([1]), "tags": ["PT\x00", "PT-2"]}, False),
])
def test_values_the_tables_cannot_hold_refuse_the_whole_body(case: dict, good: bool):
    if good:
        body_rows(case)
    else:
        with pytest.raises(UnstorableBody):
            body_rows(case)


def test_partition_names_cover_days_before_1970():
    assert partition_name("samples", 20561) == "samples_d20561"
    assert partition_name("events", -3) == "events_dm3"


def test_every_command_is_in_docs_platform_md():
    commands = parser()._subparsers._group_actions[0].choices
    documented = set(re.findall(r"^gatewayd-ingest ([a-z-]+)", (ROOT / "docs" / "platform.md").read_text(), re.M))
    assert set(commands) <= documented, set(commands) - documented
