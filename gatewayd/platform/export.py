"""Write verified batches into a SQLite file an integrator can query: what did the platform receive?

    gatewayd verify --public-key gw.pub --capture capture.bin --export received.db
    sqlite3 received.db "select tag, count(*), min(value), max(value) from samples group by tag"

Only batches that passed every check are exported, each row once (deduplicated by sequence number),
with the sequence number of the batch that carried it. This is a commissioning tool, off the hot
path, so sqlite-utils' table creation and bulk inserts are worth their convenience here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from gatewayd.platform.verify import Accepted


SAMPLE_COLUMNS = {"gateway": str, "seq": int, "tag": str, "ts_ms": int, "value": float, "quality": int,
                  "source_ts_ms": int}
EVENT_COLUMNS = {"gateway": str, "seq": int, "ts_ms": int, "kind": str, "source": str, "priority": int,
                 "message": str, "data": str}


def sample_rows(gateway: str, batch: Accepted) -> Iterator[dict[str, Any]]:
    body = batch.body
    columns = body["samples"]
    for tag, ts, value, quality, source_ts in zip(columns["tag"], columns["ts"], columns["value"],
                                                  columns["quality"], columns["source_ts"]):
        yield {"gateway": gateway, "seq": batch.seq, "tag": body["tags"][tag], "ts_ms": ts, "value": value,
               "quality": quality, "source_ts_ms": source_ts}


def event_rows(gateway: str, batch: Accepted) -> Iterator[dict[str, Any]]:
    for event in batch.body["events"]:
        yield {"gateway": gateway, "seq": batch.seq, "ts_ms": event["ts"], "kind": event["kind"],
               "source": event["source"], "priority": event["priority"], "message": event["message"],
               "data": json.dumps(event["data"], ensure_ascii=False, sort_keys=True)}


def export(batches: Iterable[Accepted], gateway: str, path: Path) -> tuple[int, int]:
    """Append the batches' samples and events to the database at `path`; returns how many of each."""
    batches = list(batches)
    samples = [row for batch in batches for row in sample_rows(gateway, batch)]
    events = [row for batch in batches for row in event_rows(gateway, batch)]
    db = sqlite_utils.Database(path)
    try:
        for name, rows, columns, index in (("samples", samples, SAMPLE_COLUMNS, ["tag", "ts_ms"]),
                                           ("events", events, EVENT_COLUMNS, ["kind", "ts_ms"])):
            table = db.table(name)
            if not table.exists():
                table.create(columns)
                table.create_index(index)
            table.insert_all(rows, batch_size=5000)
    finally:
        db.close()
    return len(samples), len(events)
