"""The WebSocket driver's decoding and inbound queue, at their boundaries, on a recording sink.

Which tags a message feeds (`match`), DECODE_ERROR for a frame that is not JSON (only the tags
without `match` are marked) and for a missing path (that tag alone), out-of-order source times kept
UNCERTAIN, and the queue: `queue_limit` messages kept, one more drops the oldest, reported as a gap
charged to every tag.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from drivers.inbox import Message
from drivers.websocket.driver import WebSocketDriver, closed_cause
from gatewayd.config import parse_config
from core.types import Quality
from tests.uplinkschemas import event_problems


class Sink:
    def __init__(self) -> None:
        self.writes: list[tuple[list[int], list[float], int, float | None, float | None]] = []
        self.marks: list[tuple[list[int], int]] = []
        self.events: list = []

    def write(self, rows, values, quality=0, source_ts=None, read_at=None) -> None:
        """One (row, value, quality, source_ts or None, read_at) per row written."""
        for row, value, code, stamp, at in zip(rows, values, quality, source_ts, read_at):
            self.writes.append((int(row), float(value), int(code), None if np.isnan(stamp) else float(stamp),
                                float(at)))

    def set_quality(self, rows, quality, read_at=None) -> None:
        self.marks += [(int(row), int(quality)) for row in rows]

    def event(self, event) -> None:
        self.events.append(event)


def driver(tmp_path: Path, queue_limit: int = 10_000) -> WebSocketDriver:
    tags = [{"name": "GD201", "value": "/ch4", "timestamp": "/ts", "timestamp_format": "ms",
             "match": {"/id": "GD-201"}},
            {"name": "GD202", "value": "/ch4", "match": {"/id": "GD-202"}},
            {"name": "WIND", "value": "/wind"}]
    document = {"gateway": {"id": "gw"},
                "devices": [{"name": "ws", "driver": "websocket", "url": "ws://127.0.0.1:1/feed",
                             "queue_limit": queue_limit, "tags": tags}],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    device = parse_config(yaml.safe_dump(document), tmp_path / "gw.yaml").devices[0]
    return WebSocketDriver.from_config(device, np.array([10, 20, 30]))


def feed(ws: WebSocketDriver, sink: Sink, payload: str | bytes, read_at: float = 5.0) -> None:
    ws.decode(sink, [Message("", payload, read_at)])


def test_a_message_feeds_the_tags_it_matches_with_source_and_arrival_time(tmp_path):
    ws, sink = driver(tmp_path), Sink()
    feed(ws, sink, json.dumps({"id": "GD-201", "ch4": 12.5, "ts": 1764612000250, "wind": 3}))
    assert sink.writes == [(10, 12.5, Quality.GOOD, 1764612000.25, 5.0), (30, 3.0, Quality.GOOD, None, 5.0)]
    assert (ws.stats.polls, ws.stats.decode_errors) == (1, 0)


def test_a_missing_path_is_decode_error_for_that_tag_alone(tmp_path):
    ws, sink = driver(tmp_path), Sink()
    feed(ws, sink, json.dumps({"id": "GD-202", "ch4": 4.0}))  # no /wind: WIND (no match) is DECODE_ERROR
    assert sink.writes == [(20, 4.0, Quality.GOOD, None, 5.0)]
    assert sink.marks == [(30, Quality.DECODE_ERROR)]
    feed(ws, sink, json.dumps({"id": "GD-201", "ch4": "twelve", "ts": 1, "wind": 1}))
    assert sink.marks[-1] == (10, Quality.DECODE_ERROR)
    assert ws.stats.decode_errors == 2


def test_a_frame_that_is_not_json_marks_only_the_tags_without_match(tmp_path):
    ws, sink = driver(tmp_path), Sink()
    for garbage in ("{not json", b"\xff\xfe", "[1, 2"):
        feed(ws, sink, garbage)
    assert sink.marks == [(30, Quality.DECODE_ERROR)] * 3 and not sink.writes
    assert ws.stats.decode_errors == 3


def test_an_older_source_time_is_kept_uncertain_and_an_equal_one_is_not_late(tmp_path):
    ws, sink = driver(tmp_path), Sink()
    for ts in (2000, 1999, 2000, 2001):
        feed(ws, sink, json.dumps({"id": "GD-201", "ch4": 1.0, "ts": ts, "wind": 0}))
    qualities = [quality for row, _, quality, _, _ in sink.writes if row == 10]
    assert qualities == [Quality.GOOD, Quality.UNCERTAIN, Quality.GOOD, Quality.GOOD]
    assert ws.stats.out_of_order == 1


def test_the_inbox_keeps_its_limit_and_a_drop_is_one_gap_charged_to_every_tag(tmp_path):
    ws, sink = driver(tmp_path, queue_limit=2), Sink()
    now = time.monotonic()
    for index in range(2):
        ws.inbox.put(Message("", str(index), now))
    assert not ws.report_gap(sink) and len(ws.inbox) == 2
    for index in range(2, 5):
        ws.inbox.put(Message("", str(index), now))
    assert [message.payload for message in ws.inbox.take(10)] == ["3", "4"]
    assert ws.report_gap(sink) and not ws.report_gap(sink)
    (gap,) = sink.events
    assert gap.kind == "gap" and gap.data["messages"] == 3
    assert {tag: entry[0] for tag, entry in gap.data["tags"].items()} == {"GD201": 3, "GD202": 3, "WIND": 3}
    assert abs(gap.data["first_ts"] / 1000 - time.time()) < 5
    assert event_problems([gap]) == []
    assert ws.stats.messages_dropped == 3


def test_close_causes_name_who_closed_and_why():
    assert closed_cause(None, "", 1011, "keepalive ping timeout") == \
        "connection closed by the gateway: 1011 keepalive ping timeout"
    assert closed_cause(1001, "going away") == "connection closed by the server: 1001 going away"
    assert closed_cause(None, "") == "connection lost without a close frame"
