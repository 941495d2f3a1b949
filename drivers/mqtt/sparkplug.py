"""Sparkplug B payloads decoded from the protobuf wire format, from the specification's field numbers.

No generated code and no protobuf runtime: a payload is a handful of fields, read here directly.

Wire format: each field is a varint key (field number << 3 | wire type), then its value: 0 a
varint, 1 eight bytes little-endian, 2 a varint length and that many bytes, 5 four bytes
little-endian. Unknown fields are skipped by their wire type (the format's own forward
compatibility); wire types 3, 4 (groups), 6, 7, a varint longer than 10 bytes, a length running
past the end or a field number 0 make the payload garbage (`SparkplugError`).

Payload (spec 6.4.1): 1 timestamp (uint64, ms), 2 metrics (Metric, repeated), 3 seq (uint64),
4 uuid, 5 body. Metric (6.4.2): 1 name, 2 alias (uint64), 3 timestamp (uint64, ms), 4 datatype
(uint32), 5 is_historical, 6 is_transient, 7 is_null, 8 metadata, 9 properties, 10 int_value
(uint32), 11 long_value (uint64), 12 float_value (float), 13 double_value (double), 14 boolean_value,
15 string_value, 16 bytes_value, 17 dataset, 18 template, 19 extension.

Values by datatype (6.4.16): Int8/16/32 and UInt8/16/32 travel in int_value, Int64, UInt64 and
DateTime in long_value; signed types are two's complement of their width and are sign-extended
here. Encoders disagree on UInt32 (Tahu's Java puts it in long_value, its Python in int_value), so
every integer type takes whichever of the two is present. Float, Double, Boolean, String, Text and
UUID come from their own fields. DataSet, Bytes, File, Template, PropertySet and the arrays are
`UNSUPPORTED`: a tag mapped to one is DECODE_ERROR, the payload's other metrics are unaffected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

DATATYPES = {
    "Int8": 1, "Int16": 2, "Int32": 3, "Int64": 4, "UInt8": 5, "UInt16": 6, "UInt32": 7, "UInt64": 8,
    "Float": 9, "Double": 10, "Boolean": 11, "String": 12, "DateTime": 13, "Text": 14, "UUID": 15,
    "DataSet": 16, "Bytes": 17, "File": 18, "Template": 19, "PropertySet": 20, "PropertySetList": 21,
}
DATATYPE_NAMES = {code: name for name, code in DATATYPES.items()}
SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}  # Int8..Int64
UNSIGNED_BITS = {5: 8, 6: 16, 7: 32, 8: 64, 13: 64}  # UInt8..UInt64, DateTime (ms)
TEXT_TYPES = frozenset({12, 14, 15})
MAX_VARINT_BYTES = 10

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


class SparkplugError(ValueError):
    """The bytes are not a Sparkplug B payload; the message says where they stop making sense."""


class _Unsupported:
    def __repr__(self) -> str:
        return "UNSUPPORTED"


UNSUPPORTED: Any = _Unsupported()


@dataclass(slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None  # ms since 1970
    datatype: int = 0
    is_historical: bool = False
    is_null: bool = False
    value: Any = None  # decoded by datatype; None when the field its datatype names is absent

    @property
    def type_name(self) -> str:
        return DATATYPE_NAMES.get(self.datatype, f"datatype {self.datatype}")


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None  # ms since 1970
    seq: int | None = None
    metrics: list[Metric] = field(default_factory=list)


def decode_payload(data: bytes) -> Payload:
    """The payload in `data`; SparkplugError if the bytes are truncated or garbage."""
    payload = Payload()
    for number, wire, value in _fields(memoryview(data), "payload"):
        if number == 1 and wire == 0:
            payload.timestamp = value
        elif number == 2 and wire == 2:
            payload.metrics.append(_metric(value))
        elif number == 3 and wire == 0:
            payload.seq = value
        elif number in (1, 2, 3):
            raise SparkplugError(f"payload field {number} has wire type {wire}")
    return payload


def _metric(data: memoryview) -> Metric:
    metric = Metric()
    raw: dict[int, Any] = {}
    for number, wire, value in _fields(data, "metric"):
        if number == 1 and wire == 2:
            metric.name = _text(value, "metric name")
        elif number == 2 and wire == 0:
            metric.alias = value
        elif number == 3 and wire == 0:
            metric.timestamp = value
        elif number == 4 and wire == 0:
            metric.datatype = value
        elif number == 5 and wire == 0:
            metric.is_historical = bool(value)
        elif number == 7 and wire == 0:
            metric.is_null = bool(value)
        elif 10 <= number <= 19:
            raw[number] = (wire, value)
    metric.value = _value(metric.datatype, raw)
    return metric


def _value(datatype: int, raw: dict[int, Any]) -> Any:
    """The metric's value by its datatype from the value fields present; None if its field is absent."""
    if datatype in SIGNED_BITS or datatype in UNSIGNED_BITS:
        found = raw.get(10) or raw.get(11)
        if found is None:
            return None
        wire, number = _expect(found, 0, datatype)
        bits = SIGNED_BITS.get(datatype) or UNSIGNED_BITS[datatype]
        number &= (1 << bits) - 1
        if datatype in SIGNED_BITS and number >= 1 << (bits - 1):
            number -= 1 << bits
        return number
    if datatype == 9:
        return _fixed(raw.get(12), 5, _FLOAT, datatype)
    if datatype == 10:
        return _fixed(raw.get(13), 1, _DOUBLE, datatype)
    if datatype == 11:
        return None if 14 not in raw else bool(_expect(raw[14], 0, datatype)[1])
    if datatype in TEXT_TYPES:
        return None if 15 not in raw else _text(_expect(raw[15], 2, datatype)[1], "string value")
    return UNSUPPORTED


def _expect(found: tuple[int, Any], wire: int, datatype: int) -> tuple[int, Any]:
    if found[0] != wire:
        raise SparkplugError(f"{DATATYPE_NAMES.get(datatype, datatype)} value has wire type {found[0]}")
    return found


def _fixed(found: tuple[int, Any] | None, wire: int, layout: struct.Struct, datatype: int) -> float | None:
    if found is None:
        return None
    return layout.unpack(_expect(found, wire, datatype)[1])[0]


def _text(data: memoryview, what: str) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        raise SparkplugError(f"{what} is not UTF-8") from None


def _fields(data: memoryview, what: str):
    """(field number, wire type, value) of each field: an int for varints, bytes for the rest."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise SparkplugError(f"{what}: field number 0 at byte {position}")
        if wire == 0:
            value, position = _varint(data, position, what)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if position + size > end:
                raise SparkplugError(f"{what}: field {number} truncated")
            value, position = data[position:position + size], position + size
        elif wire == 2:
            size, position = _varint(data, position, what)
            if position + size > end:
                raise SparkplugError(f"{what}: field {number} needs {size} bytes, {end - position} left")
            value, position = data[position:position + size], position + size
        else:
            raise SparkplugError(f"{what}: field {number} has wire type {wire}, which Sparkplug never uses")
        yield number, wire, value


def _varint(data: memoryview, position: int, what: str) -> tuple[int, int]:
    result = shift = 0
    for index in range(position, min(position + MAX_VARINT_BYTES, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, index + 1
        shift += 7
    if len(data) - position >= MAX_VARINT_BYTES:
        raise SparkplugError(f"{what}: varint longer than {MAX_VARINT_BYTES} bytes at byte {position}")
    raise SparkplugError(f"{what}: truncated varint at byte {position}")
