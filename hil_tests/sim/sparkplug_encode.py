"""A Sparkplug B payload encoder for the simulators and tests, written apart from the gateway's decoder.

It builds the protobuf bytes field by field from the specification's numbers (Payload: 1 timestamp,
2 metrics, 3 seq; Metric: 1 name, 2 alias, 3 timestamp, 4 datatype, 5 is_historical, 7 is_null,
10 int_value, 11 long_value, 12 float, 13 double, 14 boolean, 15 string), so that a test of the
decoder does not test the decoder against itself. Negative integers go in as two's complement of
the field (uint32 for int_value, uint64 for long_value), as Sparkplug's encoders write them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

TYPE_CODES = {"Int8": 1, "Int16": 2, "Int32": 3, "Int64": 4, "UInt8": 5, "UInt16": 6, "UInt32": 7, "UInt64": 8,
              "Float": 9, "Double": 10, "Boolean": 11, "String": 12, "DateTime": 13, "Text": 14, "UUID": 15,
              "DataSet": 16, "Bytes": 17}
INT_VALUE_TYPES = {"Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32"}
LONG_VALUE_TYPES = {"Int64", "UInt64", "DateTime"}


@dataclass
class MetricOut:
    """One metric to encode; `value` None with `is_null` for a null, `raw` for hand-made value fields."""

    name: str | None
    datatype: str = "Double"
    value: Any = None
    alias: int | None = None
    timestamp: int | None = None
    is_null: bool = False
    is_historical: bool = False
    long_for_uint32: bool = False  # put a UInt32 in long_value, as Tahu's Java encoder does


def varint(number: int) -> bytes:
    if number < 0:
        raise ValueError("varint of a negative number; take its two's complement first")
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def varint_field(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    return key(number, 2) + varint(len(value)) + value


def encode_metric(metric: MetricOut) -> bytes:
    out = b""
    if metric.name is not None:
        out += bytes_field(1, metric.name.encode("utf-8"))
    if metric.alias is not None:
        out += varint_field(2, metric.alias)
    if metric.timestamp is not None:
        out += varint_field(3, metric.timestamp)
    out += varint_field(4, TYPE_CODES[metric.datatype])
    if metric.is_historical:
        out += varint_field(5, 1)
    if metric.is_null:
        return out + varint_field(7, 1)
    return out + value_field(metric)


def value_field(metric: MetricOut) -> bytes:
    kind, value = metric.datatype, metric.value
    if kind in INT_VALUE_TYPES and not (kind == "UInt32" and metric.long_for_uint32):
        return varint_field(10, value & 0xFFFFFFFF)
    if kind in LONG_VALUE_TYPES or kind == "UInt32":
        return varint_field(11, value & 0xFFFFFFFFFFFFFFFF)
    if kind == "Float":
        return key(12, 5) + struct.pack("<f", value)
    if kind == "Double":
        return key(13, 1) + struct.pack("<d", value)
    if kind == "Boolean":
        return varint_field(14, 1 if value else 0)
    if kind in ("String", "Text", "UUID"):
        return bytes_field(15, value.encode("utf-8"))
    if kind == "Bytes":
        return bytes_field(16, value)
    raise ValueError(f"no encoding here for {kind}")


def encode_payload(metrics: list[MetricOut], seq: int | None = None, timestamp: int | None = None) -> bytes:
    out = b""
    if timestamp is not None:
        out += varint_field(1, timestamp)
    for metric in metrics:
        out += bytes_field(2, encode_metric(metric))
    if seq is not None:
        out += varint_field(3, seq)
    return out
