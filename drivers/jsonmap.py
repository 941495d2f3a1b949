"""One tag's mapping from a JSON payload: where its value, source time and status are, and which
payloads are its own. Shared by the subscribing drivers (MQTT, WebSocket); knows no transport.

A tag names, with JSON Pointers (RFC 6901, `drivers.jsonpointer`):

- `value`: the reading; a JSON number or boolean (true 1, false 0). Anything else is DECODE_ERROR;
  NaN or infinity cannot occur in JSON, a number beyond float range is OUT_OF_RANGE;
- `timestamp` and `timestamp_format` (s, ms, iso8601): the source time; without them a reading has
  none and the gateway time (its arrival) is all it carries;
- `quality` and `quality_map`: a status field and a table from its values to quality names
  (`{ok: GOOD, fault: SENSOR_FAULT, cal: MAINTENANCE}`); a status not in the table is DECODE_ERROR,
  since guessing would vouch for a value the device did not;
- `match`: pointer -> value pairs a payload must carry to be this tag's (a gateway that publishes
  every detector on one topic as `{"id": "GD-101", ...}`); a payload that differs is not this tag's,
  which is no error.

Outcome of `read(document)`, in this order: a status mapped to a bad quality wins (a detector in
fault often sends no number: SENSOR_FAULT says more than DECODE_ERROR), keeping a numeric value if
there is one; then a missing or non-numeric value, a missing or unreadable timestamp, a missing or
unknown status each make the reading DECODE_ERROR with a `problem` saying which; otherwise the value
with its status's quality (GOOD without a status field).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from drivers.jsonpointer import MISSING, Pointer, PointerSyntaxError
from drivers.sourcetime import FORMATS, BadTimestamp, source_time
from drivers.values import describe, to_float
from core.schema import Field, Invalid, Reader, one_of, optional
from core.types import Quality

NAN = math.nan


class BadDocument(ValueError):
    """The payload is not a JSON document (not UTF-8, not JSON, or nested too deep to decode)."""


def decode_document(payload: bytes | str) -> Any:
    """The decoded JSON document of a payload; BadDocument with the reason if there is none."""
    try:
        return json.loads(payload)
    except RecursionError:
        raise BadDocument("JSON nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise BadDocument(f"not JSON: {str(exc)[:80]}") from None


def scalar_key(raw: Any) -> tuple[str, Any] | None:
    """A JSON or YAML scalar as a comparable key: the number 1 and the string "1" differ, 1 and 1.0
    do not, true is not 1. None for what is not a scalar (objects, arrays)."""
    if raw is None:
        return ("null", None)
    if isinstance(raw, bool):
        return ("bool", raw)
    if isinstance(raw, (int, float)):
        return ("number", float(raw))
    if isinstance(raw, str):
        return ("text", raw)
    return None


class Reading(NamedTuple):
    value: float
    quality: Quality
    source_ts: float  # Unix seconds, NaN when the payload gives none
    problem: str | None  # why the reading is DECODE_ERROR, for the log


@dataclass(frozen=True)
class JsonMapping:
    value: Pointer
    timestamp: Pointer | None = None
    timestamp_format: str | None = None
    quality: Pointer | None = None
    quality_map: tuple[tuple[tuple[str, Any], Quality], ...] = ()
    match: tuple[tuple[Pointer, tuple[str, Any]], ...] = ()
    _table: dict = field(default_factory=dict, init=False, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        self._table.update(self.quality_map)

    def selects(self, document: Any) -> bool:
        """Whether `document` is this tag's (every `match` pair holds)."""
        return all(scalar_key(pointer.resolve(document)) == expected for pointer, expected in self.match)

    def read(self, document: Any) -> Reading:
        status = Quality.GOOD
        if self.quality is not None:
            raw_status = self.quality.resolve(document)
            if raw_status is MISSING:
                return Reading(NAN, Quality.DECODE_ERROR, NAN, f"no status at {self.quality}")
            mapped = self._table.get(scalar_key(raw_status))
            if mapped is None:
                return Reading(NAN, Quality.DECODE_ERROR, NAN,
                               f"status {describe(raw_status)} at {self.quality} is not in quality_map")
            status = mapped
        raw = self.value.resolve(document)
        value, value_quality = (NAN, Quality.DECODE_ERROR) if raw is MISSING else to_float(raw)
        stamp, stamp_problem = self._source_time(document)
        if status.is_bad:
            return Reading(value, status, stamp, None)
        if raw is MISSING:
            return Reading(NAN, Quality.DECODE_ERROR, stamp, f"no value at {self.value}")
        if value_quality == Quality.DECODE_ERROR:
            return Reading(NAN, Quality.DECODE_ERROR, stamp, f"value at {self.value} is {describe(raw)}")
        if stamp_problem is not None:
            return Reading(value, Quality.DECODE_ERROR, NAN, stamp_problem)
        return Reading(value, value_quality if value_quality.is_bad else status, stamp, None)

    def _source_time(self, document: Any) -> tuple[float, str | None]:
        if self.timestamp is None:
            return NAN, None
        raw = self.timestamp.resolve(document)
        if raw is MISSING:
            return NAN, f"no timestamp at {self.timestamp}"
        try:
            return source_time(raw, self.timestamp_format), None
        except BadTimestamp as exc:
            return NAN, f"timestamp at {self.timestamp}: {exc}"


# --- configuration -------------------------------------------------------------------------------------

def pointer(value: Any) -> Pointer:
    try:
        return Pointer.parse(value)
    except PointerSyntaxError as exc:
        raise Invalid(str(exc)) from None


QUALITY_NAMES = ", ".join(quality.name for quality in Quality)


def quality_table(value: Any) -> tuple[tuple[tuple[str, Any], Quality], ...]:
    """`{status value: quality name}` as sorted key pairs; each key a scalar, each name a Quality."""
    if not isinstance(value, dict) or not value:
        raise Invalid(f"expected a mapping of status values to quality names ({QUALITY_NAMES}), got {value!r}")
    pairs = []
    for raw, name in value.items():
        key = scalar_key(raw)
        if key is None:
            raise Invalid(f"status {raw!r} is not a scalar (a string, number, boolean or null)")
        if not isinstance(name, str) or name not in Quality.__members__:
            raise Invalid(f"status {raw!r}: {name!r} is not a quality; use one of {QUALITY_NAMES}")
        pairs.append((key, Quality[name]))
    return tuple(pairs)


def match_pairs(value: Any) -> tuple[tuple[Pointer, tuple[str, Any]], ...]:
    """`{pointer: scalar}` pairs a payload must carry."""
    if not isinstance(value, dict) or not value:
        raise Invalid(f"expected a mapping of JSON Pointers to values, e.g. {{/id: GD-101}}, got {value!r}")
    pairs = []
    for raw_pointer, expected in value.items():
        key = scalar_key(expected)
        if key is None:
            raise Invalid(f"{raw_pointer}: {expected!r} is not a scalar (a string, number, boolean or null)")
        pairs.append((pointer(raw_pointer), key))
    return tuple(pairs)


# the JSON mapping keys of a tag; `value` is required where the payload is JSON (see build_mapping)
JSON_TAG_FIELDS = {
    "value": Field(optional(pointer), None, "JSON Pointer (RFC 6901) to the reading, e.g. /gas/ch4 or /readings/0"),
    "timestamp": Field(optional(pointer), None, "JSON Pointer to the source time; needs timestamp_format"),
    "timestamp_format": Field(optional(one_of(*FORMATS)), None,
                              "s (epoch seconds), ms (epoch milliseconds) or iso8601 (with Z or an offset)"),
    "quality": Field(optional(pointer), None, "JSON Pointer to a status field; needs quality_map"),
    "quality_map": Field(optional(quality_table), None,
                         "status value -> quality name, e.g. {ok: GOOD, fault: SENSOR_FAULT}; an unlisted "
                         "status is DECODE_ERROR"),
    "match": Field(optional(match_pairs), None,
                   "JSON Pointer -> value a payload must carry to be this tag's, e.g. {/id: GD-101}"),
}


def build_mapping(values: dict[str, Any], reader: Reader, path: str, line: int) -> JsonMapping | None:
    """The tag's JsonMapping from its JSON_TAG_FIELDS values; the keys that go together are checked."""
    problems = []
    if values["value"] is None:
        problems.append(("value", "required key is missing: the JSON Pointer to the reading, e.g. /value"))
    for key, partner in (("timestamp", "timestamp_format"), ("quality", "quality_map")):
        if (values[key] is None) != (values[partner] is None):
            given, missing = (key, partner) if values[partner] is None else (partner, key)
            problems.append((given, f"{given} needs {missing}"))
    for key, message in problems:
        reader.error(line, f"{path}.{key}", message)
    if problems:
        return None
    return JsonMapping(values["value"], values["timestamp"], values["timestamp_format"], values["quality"],
                       values["quality_map"] or (), values["match"] or ())
