"""What a device sent, as the point table's float and a quality code: never an exception.

OPC servers (UA, and DA through a gateway) hand over typed variants: numbers, booleans, strings,
dates, arrays, structures or nothing. The point table holds one float per tag, so anything that is not
a finite real number is marked instead of crashing the driver: a non-number is DECODE_ERROR (the tag
points at the wrong node), NaN and infinity are OUT_OF_RANGE, for every driver alike (the Modbus codec
decodes a non-finite float register to NaN, and `finite_quality` marks it). Pure functions, shared by
every driver kind.
"""

from __future__ import annotations

import math
from datetime import datetime, UTC
from typing import Any

import numpy as np

from core.types import Quality

NAN = float("nan")


def to_float(value: Any) -> tuple[float, Quality]:
    """(value, GOOD) for a finite number or boolean; (NaN, reason) for anything else."""
    if isinstance(value, bool):
        return (1.0 if value else 0.0), Quality.GOOD
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            return NAN, Quality.OUT_OF_RANGE
        return (number, Quality.GOOD) if math.isfinite(number) else (NAN, Quality.OUT_OF_RANGE)
    return NAN, Quality.DECODE_ERROR


def finite_quality(values: np.ndarray) -> int | np.ndarray:
    """GOOD, one code for every value, when decoding gave no NaN (a block almost always; a sink writes
    one code as fast as it can); else a code per value: GOOD, or OUT_OF_RANGE where decoding gave NaN.

    The sum of the squares is NaN exactly when a value is (its terms are never negative, so no
    infinity can cancel another), and one dot product is the cheapest test of a whole block."""
    if not math.isnan(np.dot(values, values)):
        return int(Quality.GOOD)
    return np.where(np.isnan(values), np.uint8(Quality.OUT_OF_RANGE), np.uint8(Quality.GOOD))


def describe(value: Any, limit: int = 40) -> str:
    """A short, log-safe description of a value that could not be used (huge strings are cut)."""
    text = repr(value)
    shown = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return f"{type(value).__name__} {shown}"


def unix_seconds(moment: Any) -> float:
    """A source timestamp as Unix seconds; naive datetimes are UTC (as OPC puts them); NaN if unusable."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return moment.timestamp()
        except (OverflowError, ValueError, OSError):
            return NAN
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        return float(moment) if math.isfinite(moment) else NAN
    if isinstance(moment, str):
        try:
            return unix_seconds(datetime.fromisoformat(moment.strip()))
        except ValueError:
            return NAN
    return NAN
