"""OPC DA quality words and OpenOPC quality names to quality codes; a group read's answer to arrays."""

from __future__ import annotations

import math

import pytest

from drivers.opcda.readings import decode, quality_of
from core.types import Quality


@pytest.mark.parametrize("quality, expected", [
    (0xC0, Quality.GOOD), (0xC1, Quality.GOOD), (0xC2, Quality.GOOD), (0xC3, Quality.GOOD),
    (0xD8, Quality.GOOD),  # good, local override
    (0x40, Quality.UNCERTAIN), (0x44, Quality.UNCERTAIN), (0x54, Quality.UNCERTAIN), (0x58, Quality.UNCERTAIN),
    (0x00, Quality.DEVICE_ERROR), (0x04, Quality.DEVICE_ERROR), (0x08, Quality.COMM_FAILURE),
    (0x0C, Quality.DEVICE_ERROR), (0x10, Quality.SENSOR_FAULT), (0x11, Quality.SENSOR_FAULT),
    (0x14, Quality.COMM_FAILURE), (0x18, Quality.COMM_FAILURE), (0x1C, Quality.MAINTENANCE),
    (0x20, Quality.NO_VALUE), (0x80, Quality.DEVICE_ERROR), (0x0100 | 0xC0, Quality.GOOD),  # vendor bits above
    ("Good", Quality.GOOD), ("good", Quality.GOOD), ("Uncertain", Quality.UNCERTAIN), ("Bad", Quality.DEVICE_ERROR),
    ("Error", Quality.DEVICE_ERROR), ("Unknown", Quality.DEVICE_ERROR),
    ("Splendid", Quality.DECODE_ERROR), (None, Quality.DECODE_ERROR), (True, Quality.DECODE_ERROR),
    (-1, Quality.DECODE_ERROR), (0x10000, Quality.DECODE_ERROR), (192.0, Quality.DECODE_ERROR),
])
def test_quality(quality, expected):
    assert quality_of(quality) == expected


def test_decode_puts_readings_in_item_order_whatever_the_answer_order():
    items = ["A", "B", "C", "D", "E", "F"]
    answer = [
        ("C", "text", "Good", "2024-03-05 10:00:00+00:00"),
        ["B", 5, 0x10, "2024-03-05 10:00:00+00:00"],  # a list, as some serializers send tuples
        ("A", 1.5, "Good", "2024-03-05 10:00:01+00:00"),
        ("E", None, "Error", None),
        ("Z", 1.0, "Good", None),  # an item nobody asked for
        "garbage",
        ("F", 2.0, 0x40, 1709632800.0),
    ]
    values, qualities, stamps, notes = decode(answer, items)
    assert values[0] == 1.5 and qualities[0] == Quality.GOOD and stamps[0] == 1709632801.0
    assert values[1] == 5.0 and qualities[1] == Quality.SENSOR_FAULT  # bad keeps the value it came with
    assert math.isnan(values[2]) and qualities[2] == Quality.DECODE_ERROR
    assert qualities[3] == Quality.DEVICE_ERROR and math.isnan(stamps[3])  # missing from the answer
    assert qualities[4] == Quality.DEVICE_ERROR and math.isnan(values[4])
    assert values[5] == 2.0 and qualities[5] == Quality.UNCERTAIN and stamps[5] == 1709632800.0
    assert len(notes) == 2


def test_decode_an_answer_that_is_not_a_list():
    values, qualities, stamps, notes = decode({"A": 1}, ["A", "B"])
    assert (qualities == Quality.DECODE_ERROR).all() and notes == ["answer is a dict, not a list of readings"]
