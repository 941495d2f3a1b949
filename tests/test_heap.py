"""gatewayd.heap: what is alive at READY is frozen out of the collector's sight; a reload gives back
what it replaced, cycles included."""

from __future__ import annotations

import gc
import weakref

import pytest

from gatewayd import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first


@pytest.fixture(autouse=True)
def collector_as_it_was():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    kept = cycle()
    gc.unfreeze()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    assert not any(obj is kept for obj in gc.get_objects())  # out of the collector's sight


def test_a_frozen_cycle_dropped_by_a_reload_is_freed_by_resettle() -> None:
    replaced, kept = cycle(), cycle()
    gone = weakref.ref(replaced)
    heap.settle()
    del replaced
    gc.collect()
    assert gone() is not None  # frozen: a full collection does not see it
    heap.resettle()
    assert gone() is None
    assert gc.get_freeze_count() > 0 and not any(obj is kept for obj in gc.get_objects())
