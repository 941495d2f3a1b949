"""A decoded batch body as table rows, and the checks that keep a signed body's values inside what the
tables hold (PostgreSQL bigint, text without NUL), so a batch is either stored whole or refused whole."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ingest.schema import DAY_MS

INT64_MAX = 2**63 - 1


class UnstorableBody(ValueError):
    """The body is well-formed JSON of the right shape but holds a value the tables cannot store."""


@dataclass(frozen=True)
class BatchRows:
    samples: list[tuple]
    events: list[tuple]
    days: frozenset[int]


def _int64_column(values: list, where: str) -> None:
    present = [v for v in values if v is not None] if None in values else values
    if present and not (-INT64_MAX - 1 <= min(present) and max(present) <= INT64_MAX):
        raise UnstorableBody(f"a {where} does not fit a signed 64-bit integer")


def _text(value: str, where: str) -> str:
    if "\x00" in value:
        raise UnstorableBody(f"{where} contains a NUL character")
    return value


def body_rows(body: dict) -> BatchRows:
    """Sample and event rows in the column order of `SAMPLE_COLUMNS` and `EVENT_COLUMNS` after the batch's
    key (gateway_id, epoch id, seq), which the writer puts in front once the epoch is known."""
    tags = [_text(tag, "tag name") for tag in body["tags"]]
    columns = body["samples"]
    _int64_column(columns["ts"], "sample ts")
    _int64_column(columns["source_ts"], "sample source_ts")
    samples = [
        (tags[tag], ts, value, quality, source_ts)
        for tag, ts, value, quality, source_ts in zip(
            columns["tag"], columns["ts"], columns["value"], columns["quality"], columns["source_ts"]
        )
    ]
    events = []
    for event in body["events"]:
        data = json.dumps(event["data"], ensure_ascii=False, allow_nan=False)
        if "\\u0000" in data:
            raise UnstorableBody(f"data of event {event['kind']!r} contains a NUL character")
        events.append((event["ts"], _text(event["kind"], "event kind"), _text(event["source"], "event source"),
                       event["priority"], _text(event["message"], "event message"), data))
    _int64_column([row[0] for row in events], "event ts")
    if any(not -(2**31) <= row[3] < 2**31 for row in events):
        raise UnstorableBody("an event priority does not fit a 32-bit integer")
    days = {row[1] // DAY_MS for row in samples} | {row[0] // DAY_MS for row in events}
    return BatchRows(samples, events, frozenset(days))


SAMPLE_COLUMNS = "gateway_id, epoch_id, seq, tag, ts_ms, value, quality, source_ts_ms"
EVENT_COLUMNS = "gateway_id, epoch_id, seq, ts_ms, kind, source, priority, message, data"
