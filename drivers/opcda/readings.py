"""An OpenOPC group read's answer as point-table arrays; OPC DA quality to quality codes. Pure.

A gateway answers `read(items, group=...)` with one `(item, value, quality, timestamp)` tuple per item.
The quality is the 16-bit OPC DA word (QQSSSSLL: major quality, sub-status, limit bits) where the
gateway passes it through, or OpenOPC's name for its major quality ("Good", "Uncertain", "Bad", and
"Error" for an item the server rejected). The word says why a value is bad, so it maps to the
matching reason; a bare name can only say good, uncertain or bad. Limit bits (low, high, constant)
do not change the quality. Timestamps are ISO 8601 strings, datetimes or Unix seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.values import NAN, to_float, unix_seconds
from core.types import Quality

MAJOR_MASK = 0xC0
STATUS_MASK = 0xFC  # major quality and sub-status; the two limit bits dropped
GOOD, UNCERTAIN, BAD = 0xC0, 0x40, 0x00

BAD_SUBSTATUS = {
    0x00: Quality.DEVICE_ERROR,  # non-specific
    0x04: Quality.DEVICE_ERROR,  # configuration error
    0x08: Quality.COMM_FAILURE,  # not connected
    0x0C: Quality.DEVICE_ERROR,  # device failure
    0x10: Quality.SENSOR_FAULT,  # sensor failure
    0x14: Quality.COMM_FAILURE,  # last known value: communication failed, the value is old
    0x18: Quality.COMM_FAILURE,  # communication failure, no value
    0x1C: Quality.MAINTENANCE,  # out of service
    0x20: Quality.NO_VALUE,  # waiting for initial data
}
NAMES = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.DEVICE_ERROR,
         "error": Quality.DEVICE_ERROR, "unknown": Quality.DEVICE_ERROR}


def quality_of(quality: Any) -> Quality:
    """The quality code for a DA quality word or OpenOPC quality name; DECODE_ERROR for anything else."""
    if isinstance(quality, str):
        return NAMES.get(quality.strip().lower(), Quality.DECODE_ERROR)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 0xFFFF:
        return Quality.DECODE_ERROR
    major = quality & MAJOR_MASK
    if major == GOOD:
        return Quality.GOOD  # including "local override": the server still vouches for the value
    if major == UNCERTAIN:
        return Quality.UNCERTAIN
    if major == BAD:
        return BAD_SUBSTATUS.get(quality & STATUS_MASK, Quality.DEVICE_ERROR)
    return Quality.DEVICE_ERROR  # 0x80 is not a defined major quality


def decode(answer: Any, items: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Values, qualities and source times in the order of `items`, plus a note per malformed entry.

    Items missing from the answer are DEVICE_ERROR; entries that are not 4-tuples are DECODE_ERROR.
    A bad quality keeps the value the gateway sent with it, if it is a number.
    """
    size = len(items)
    values, stamps = np.full(size, NAN), np.full(size, NAN)
    qualities = np.full(size, int(Quality.DEVICE_ERROR), dtype=np.uint8)
    index = {item: position for position, item in enumerate(items)}
    notes: list[str] = []
    if not isinstance(answer, (list, tuple)):
        return values, np.full(size, int(Quality.DECODE_ERROR), dtype=np.uint8), stamps, \
            [f"answer is a {type(answer).__name__}, not a list of readings"]
    for entry in answer:
        if not isinstance(entry, (list, tuple)) or len(entry) != 4 or entry[0] not in index:
            notes.append(f"unexpected entry {str(entry)[:80]}")
            continue
        item, raw, quality, moment = entry
        position = index[item]
        value, value_quality = to_float(raw)
        reported = quality_of(quality)
        if reported.is_bad:
            qualities[position] = reported
        elif not value_quality.is_good:
            qualities[position] = value_quality  # "Good" but not a number: the tag points at the wrong item
        else:
            qualities[position] = reported
        values[position] = value
        stamps[position] = unix_seconds(moment)
    return values, qualities, stamps, notes
