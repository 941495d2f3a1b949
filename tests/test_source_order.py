"""Out-of-order source times: earlier than the newest seen is late; equal is a repeat; NaN never late."""

from __future__ import annotations

import math

import numpy as np

from drivers.sourceorder import SourceOrder


def test_late_readings_are_flagged_and_do_not_move_the_newest_back():
    order = SourceOrder(2)
    assert [order.late(0, ts) for ts in (10.0, 11.0, 10.5, 11.0, 12.0, 11.999)] == [False, False, True, False,
                                                                                   False, True]
    assert order.latest[0] == 12.0 and order.latest[1] == -math.inf
    assert not order.late(1, 1.0) and not order.late(0, math.nan) and order.latest[0] == 12.0


def test_forget_starts_a_position_over():
    order = SourceOrder(2)
    order.late(0, 100.0)
    order.late(1, 100.0)
    order.forget(np.array([0]))
    assert not order.late(0, 1.0) and order.late(1, 1.0)
