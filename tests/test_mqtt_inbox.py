"""The MQTT driver's bounded inbox and write batches: drops are the oldest, counted and charged to their tags;
readings of one tag in one drain are all written, in arrival order."""

from __future__ import annotations

import numpy as np

from core.types import Quality
from drivers.inbox import Inbox, Message, gap_event
from drivers.writebatch import WriteBatch
from hil_tests.recording import RecordingSink
from tests.uplinkschemas import event_problems


def test_a_full_inbox_drops_the_oldest_and_charges_it_to_the_topics_tags():
    routes = {"a": [0], "b": [1, 2], "nobody": []}
    clock = iter(range(1000, 2000))
    inbox = Inbox(3, routes.__getitem__, wall=lambda: float(next(clock)))
    woke = [inbox.put(Message(topic, b"", 0.0)) for topic in ("a", "b", "a", "nobody", "b", "a")]
    assert woke == [True, False, False, False, False, False]
    assert [message.topic for message in inbox.take(10)] == ["nobody", "b", "a"]
    drops = inbox.take_drops()
    assert drops.messages == 3 and inbox.dropped_total == 3
    assert {position: entry[0] for position, entry in drops.positions.items()} == {0: 2, 1: 1, 2: 1}
    first, last = drops.positions[0][1], drops.positions[0][2]
    assert first < last, "first and last arrival of the dropped readings"
    gap = gap_event("mqtt", ["T-a", "T-b1", "T-b2"], drops, 3, 50.0)
    assert (gap.source, gap.data["messages"], gap.data["samples"]) == ("mqtt", 3, 4)
    assert event_problems([gap]) == []
    assert inbox.take_drops() is None and inbox.dropped_total == 3
    assert inbox.put(Message("a", b"", 0.0)), "an emptied inbox wakes the loop again"


def test_take_honours_its_budget_oldest_first():
    inbox = Inbox(10, lambda topic: [])
    for index in range(5):
        inbox.put(Message(str(index), b"", 0.0))
    assert [message.topic for message in inbox.take(2)] == ["0", "1"] and len(inbox) == 3


def test_a_batch_writes_every_reading_of_a_tag_in_order_and_marks_apart():
    sink = RecordingSink(3)
    batch = WriteBatch(sink, np.array([10, 11, 12]) - 10)
    batch.write(0, 1.0, Quality.GOOD, 100.0, 5.0)
    batch.mark(1, Quality.DECODE_ERROR, 5.0)
    batch.write(0, 2.0, Quality.UNCERTAIN, 99.0, 6.0)  # the same tag again: the first is flushed first
    assert sink.values[0] == 1.0 and sink.quality[1] == Quality.DECODE_ERROR and sink.batches >= 1
    batch.write(2, 3.0, Quality.GOOD, float("nan"), 6.0)
    batch.flush()
    assert (sink.values[0], sink.values[2]) == (2.0, 3.0) and sink.quality[0] == Quality.UNCERTAIN
    assert sink.source_ts[0] == 99.0 and sink.writes[0] == 2
