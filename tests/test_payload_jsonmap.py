"""One tag's JSON mapping: value, source time and status through a table; selection; bad payloads."""

from __future__ import annotations

import math

import pytest

from drivers.jsonmap import (JSON_TAG_FIELDS, BadDocument, JsonMapping, build_mapping, decode_document,
                                     match_pairs, quality_table)
from drivers.jsonpointer import Pointer
from core.schema import Reader
from core.types import Quality

STATUS = {"ok": "GOOD", "warmup": "UNCERTAIN", "fault": "SENSOR_FAULT", "cal": "MAINTENANCE", 3: "DEVICE_ERROR"}


def mapping(**keys) -> JsonMapping:
    values = {key: None for key in JSON_TAG_FIELDS}
    values.update(value=Pointer.parse(keys.pop("value", "/ch4")))
    for key in ("timestamp", "quality"):
        if key in keys:
            values[key] = Pointer.parse(keys.pop(key))
    if "quality_map" in keys:
        values["quality_map"] = quality_table(keys.pop("quality_map"))
    if "match" in keys:
        values["match"] = match_pairs(keys.pop("match"))
    values.update(keys)
    reader = Reader("test.yaml")
    built = build_mapping(values, reader, "devices[0].tags[0]", 7)
    assert reader.ok, reader.issues
    return built


def test_value_source_time_and_status():
    tag = mapping(timestamp="/ts", timestamp_format="ms", quality="/status", quality_map=STATUS)
    reading = tag.read({"ch4": 12.5, "ts": 1764613800250, "status": "ok"})
    assert reading == (12.5, Quality.GOOD, 1764613800.25, None)
    assert tag.read({"ch4": 3, "ts": 1764613800250, "status": "warmup"}).quality == Quality.UNCERTAIN
    assert tag.read({"ch4": True, "ts": 0, "status": "ok"})[:2] == (1.0, Quality.GOOD)
    assert tag.read({"ch4": 1, "ts": 0, "status": 3.0}).quality == Quality.DEVICE_ERROR  # 3 and 3.0 are one key


def test_a_bad_status_wins_and_keeps_a_number_if_there_is_one():
    tag = mapping(quality="/status", quality_map=STATUS)
    assert tag.read({"status": "fault"})[:2] == (pytest.approx(math.nan, nan_ok=True), Quality.SENSOR_FAULT)
    assert tag.read({"ch4": 7.0, "status": "cal"})[:2] == (7.0, Quality.MAINTENANCE)


@pytest.mark.parametrize("document, problem", [
    ({"ch4": "12.5", "ts": 1, "status": "ok"}, "value at /ch4 is str '12.5'"),
    ({"ch4": None, "ts": 1, "status": "ok"}, "value at /ch4 is NoneType None"),
    ({"ch4": [1], "ts": 1, "status": "ok"}, "value at /ch4 is list [1]"),
    ({"ts": 1, "status": "ok"}, "no value at /ch4"),
    ({"ch4": 1, "status": "ok"}, "no timestamp at /ts"),
    ({"ch4": 1, "ts": "1", "status": "ok"}, "timestamp at /ts: expected a number of seconds, got str '1'"),
    ({"ch4": 1, "ts": -5, "status": "ok"}, "timestamp at /ts: int -5 is outside 1970-01-01..9999-12-31"),
    ({"ch4": 1, "ts": 1}, "no status at /status"),
    ({"ch4": 1, "ts": 1, "status": "OK"}, "status str 'OK' at /status is not in quality_map"),
    ({"ch4": 1, "ts": 1, "status": 1}, "status int 1 at /status is not in quality_map"),
    ([], "no status at /status"),
    ("text", "no status at /status"),
])
def test_bad_payloads_are_decode_errors_that_say_why(document, problem):
    tag = mapping(timestamp="/ts", timestamp_format="s", quality="/status", quality_map=STATUS)
    reading = tag.read(document)
    assert reading.quality == Quality.DECODE_ERROR and reading.problem == problem


def test_a_number_beyond_float_range_is_out_of_range():
    reading = mapping().read(decode_document(b'{"ch4": ' + b"9" * 400 + b"}"))
    assert reading.quality == Quality.OUT_OF_RANGE and reading.problem is None


def test_without_timestamp_a_reading_has_no_source_time():
    assert math.isnan(mapping().read({"ch4": 1}).source_ts)


def test_match_selects_payloads_by_field_values():
    tag = mapping(match={"/id": "GD-101", "/channel": 2})
    assert tag.selects({"id": "GD-101", "channel": 2.0})
    assert not tag.selects({"id": "GD-101", "channel": "2"})
    assert not tag.selects({"id": "GD-102", "channel": 2})
    assert not tag.selects({"channel": 2})
    assert mapping().selects({"anything": 1})


@pytest.mark.parametrize("payload", [b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"", b"NaN NaN"])
def test_undecodable_documents(payload):
    with pytest.raises(BadDocument):
        decode_document(payload)


@pytest.mark.parametrize("keys, errors", [
    ({"value": None},
     ["devices[0].tags[0].value: required key is missing: the JSON Pointer to the reading, e.g. /value"]),
    ({"timestamp": Pointer.parse("/ts")}, ["devices[0].tags[0].timestamp: timestamp needs timestamp_format"]),
    ({"timestamp_format": "s"}, ["devices[0].tags[0].timestamp_format: timestamp_format needs timestamp"]),
    ({"quality_map": quality_table({"ok": "GOOD"})}, ["devices[0].tags[0].quality_map: quality_map needs quality"]),
])
def test_keys_that_go_together(keys, errors):
    values = {key: None for key in JSON_TAG_FIELDS}
    values["value"] = Pointer.parse("/v")
    values.update(keys)
    reader = Reader("test.yaml")
    assert build_mapping(values, reader, "devices[0].tags[0]", 7) is None
    assert [str(issue) for issue in reader.issues] == [f"test.yaml:7: {error}" for error in errors]


@pytest.mark.parametrize("table", [{"ok": "FINE"}, {"ok": 0}, {}, ["ok"], {("a",): "GOOD"}])
def test_quality_table_refuses_what_is_not_a_table_of_quality_names(table):
    with pytest.raises(ValueError):
        quality_table(table)
