"""Sparkplug B payloads from the wire: every supported datatype, unknown fields, truncated and garbage bytes."""

from __future__ import annotations

import math
import struct

import pytest

from drivers.mqtt.sparkplug import UNSUPPORTED, SparkplugError, decode_payload
from hil_tests.sim.sparkplug_encode import MetricOut, bytes_field, encode_payload, key, varint, varint_field


@pytest.mark.parametrize("datatype, value", [
    ("Int8", -128), ("Int8", 127), ("Int8", -1), ("Int16", -32768), ("Int16", 32767), ("Int32", -2**31),
    ("Int32", 2**31 - 1), ("Int64", -2**63), ("Int64", 2**63 - 1), ("Int64", -1), ("UInt8", 255), ("UInt16", 65535),
    ("UInt32", 2**32 - 1), ("UInt64", 2**64 - 1), ("UInt64", 0), ("Float", 1.5), ("Float", -0.25),
    ("Double", 12.345678901234), ("Double", -1e300), ("Boolean", True), ("Boolean", False),
    ("String", "héllo"), ("Text", ""), ("UUID", "0b5a9c2e"), ("DateTime", 1796149800250),
])
def test_every_supported_datatype_round_trips(datatype, value):
    payload = decode_payload(encode_payload([MetricOut("m", datatype, value, alias=7, timestamp=1000)], seq=5,
                                            timestamp=2000))
    metric = payload.metrics[0]
    assert (payload.seq, payload.timestamp, metric.name, metric.alias, metric.timestamp) == (5, 2000, "m", 7, 1000)
    assert metric.type_name == datatype and metric.value == value


def test_uint32_in_long_value_as_tahu_java_writes_it():
    data = encode_payload([MetricOut("m", "UInt32", 4_000_000_000, long_for_uint32=True)])
    assert decode_payload(data).metrics[0].value == 4_000_000_000


def test_a_negative_int32_written_as_a_ten_byte_varint_is_sign_extended():
    metric = key(4, 0) + varint(3) + key(10, 0) + varint((-5) & 0xFFFFFFFFFFFFFFFF)
    assert decode_payload(bytes_field(2, metric)).metrics[0].value == -5


def test_null_historical_and_a_missing_value_field():
    payload = decode_payload(encode_payload([MetricOut("a", "Double", is_null=True),
                                             MetricOut("b", "Double", 1.0, is_historical=True)]))
    assert payload.metrics[0].is_null and payload.metrics[0].value is None
    assert payload.metrics[1].is_historical and payload.metrics[1].value == 1.0
    no_value = bytes_field(2, bytes_field(1, b"c") + varint_field(4, 3))  # Int32 without int_value
    assert decode_payload(no_value).metrics[0].value is None


def test_unsupported_datatypes_are_marked_not_fatal():
    payload = decode_payload(encode_payload([MetricOut("blob", "Bytes", b"\x00\x01"), MetricOut("x", "Double", 2.0)]))
    assert payload.metrics[0].value is UNSUPPORTED and payload.metrics[1].value == 2.0


def test_unknown_fields_of_every_wire_type_are_skipped():
    extra = varint_field(6, 9) + key(20, 1) + b"\0" * 8 + key(21, 5) + b"\0" * 4 + bytes_field(22, b"xyz")
    metric = bytes_field(1, b"m") + extra + varint_field(4, 10) + key(13, 1) + struct.pack("<d", 3.5)
    payload = decode_payload(bytes_field(2, metric) + extra + varint_field(3, 1))
    assert payload.metrics[0].value == 3.5 and payload.seq == 1


def test_alias_only_metric_and_empty_payload():
    payload = decode_payload(encode_payload([MetricOut(None, "Float", 0.5, alias=3)]))
    assert payload.metrics[0].name is None and payload.metrics[0].alias == 3
    assert decode_payload(b"").metrics == [] and decode_payload(b"").seq is None


GOOD = encode_payload([MetricOut("temperature", "Double", 21.5, alias=1, timestamp=1796149800000),
                       MetricOut("pressure", "Float", 1.25, alias=2)], seq=3, timestamp=1796149800000)


@pytest.mark.parametrize("cut", range(1, len(GOOD)))
def test_every_truncation_is_an_error_or_a_shorter_valid_payload(cut):
    """Cut anywhere, the bytes either decode (cut between two fields) or raise SparkplugError; never
    anything else, never a metric that was not sent."""
    try:
        payload = decode_payload(GOOD[:cut])
    except SparkplugError:
        return
    assert [metric.name for metric in payload.metrics] in ([], ["temperature"], ["temperature", "pressure"])


@pytest.mark.parametrize("data", [
    b"\x80" * 11,  # varint longer than 10 bytes
    b"\x08",  # timestamp key without its varint
    b"\x12\x05ab",  # metrics length 5, 2 bytes left
    b"\x0b",  # wire type 3 (group start)
    b"\x0c", b"\x0e", b"\x0f",  # wire types 4, 6, 7
    b"\x00\x01",  # field number 0
    b"\x0a\x01x",  # timestamp sent as length-delimited
    bytes_field(2, bytes_field(1, b"\xff\xfe")),  # name not UTF-8
    bytes_field(2, varint_field(4, 10) + varint_field(13, 5)),  # a Double sent as a varint
    bytes_field(2, varint_field(4, 9) + key(12, 5) + b"\0\0"),  # a Float cut short
])
def test_garbage_is_refused(data):
    with pytest.raises(SparkplugError):
        decode_payload(data)


def test_random_bytes_never_raise_anything_but_sparkplug_error():
    import random
    generator = random.Random(14)
    for _ in range(3000):
        data = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 40)))
        try:
            decode_payload(data)
        except SparkplugError:
            pass


def test_float_nan_passes_through_as_nan():
    payload = decode_payload(encode_payload([MetricOut("x", "Double", math.nan)]))
    assert math.isnan(payload.metrics[0].value)
