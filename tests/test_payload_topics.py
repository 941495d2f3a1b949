"""MQTT topic filters: syntax, matching, a subscription covering a tag's topic, and the index."""

from __future__ import annotations

import pytest

from drivers.mqtt.topics import TopicIndex, TopicSyntaxError, check_filter, covers, matches


@pytest.mark.parametrize("topic_filter, topic, expected", [
    ("plant/+/gas/+", "plant/a1/gas/GD-101", True), ("plant/+/gas/+", "plant/a1/gas", False),
    ("plant/+/gas/+", "plant/a1/gas/GD-101/x", False), ("plant/#", "plant", True), ("plant/#", "plant/a/b", True),
    ("#", "anything/at/all", True), ("+", "", True), ("+/+", "/x", True), ("a/b", "a/b", True), ("a/b", "a/c", False),
    ("#", "$SYS/broker", False), ("+/broker", "$SYS/broker", False), ("$SYS/#", "$SYS/broker", True),
])
def test_matches(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("text", ["", "a/b+", "a/#/b", "a#", "a/+x", None, "a\0b"])
def test_bad_filters(text):
    with pytest.raises(TopicSyntaxError):
        check_filter(text)


def test_wildcards_refused_where_a_topic_name_is_wanted():
    with pytest.raises(TopicSyntaxError):
        check_filter("a/+", wildcards=False)
    assert check_filter("a/b", wildcards=False) == "a/b"


@pytest.mark.parametrize("outer, inner, expected", [
    ("plant/+/gas/+", "plant/+/gas/GD-101", True), ("plant/+/gas/+", "plant/a/gas/GD-101", True),
    ("plant/a/gas/+", "plant/+/gas/GD-101", False), ("plant/#", "plant/+/gas/#", True), ("plant/+", "plant/#", False),
    ("a/b", "a/b", True), ("a/b", "a/b/c", False), ("a/#", "a", True), ("#", "x/+/#", True),
])
def test_covers(outer, inner, expected):
    assert covers(outer, inner) is expected


def test_index_finds_every_matching_filter_in_insertion_order():
    entries = [("plant/+/gas/GD-101", "t1"), ("plant/a1/gas/GD-101", "t2"), ("plant/#", "t3"), ("other/x", "t4"),
               ("plant/+/gas/GD-102", "t5"), ("#", "t6")]
    index = TopicIndex(entries)
    for topic in ("plant/a1/gas/GD-101", "plant/a2/gas/GD-102", "plant", "other/x", "$SYS/x", "plant/a1/gas"):
        assert index.lookup(topic) == [item for topic_filter, item in entries if matches(topic_filter, topic)], topic
