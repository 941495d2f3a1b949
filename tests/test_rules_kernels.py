"""The numba kernels against their plain-Python references, on random sequences of scans."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.limits import RAISE, RETURN, evaluate_limits, evaluate_limits_reference
from rules.report import select_reports, select_reports_reference

values = st.one_of(st.floats(-20, 120, allow_nan=False), st.just(float("nan")))
scan = st.lists(st.tuples(values, st.sampled_from([0, 0, 0, 17])), min_size=3, max_size=3)


def limit_arrays():
    limits = np.array([[90.0, 80.0, 20.0, 10.0], [np.nan, 50.0, np.nan, np.nan], [100.0, np.nan, np.nan, 0.0]])
    return limits, np.array([2.0, 0.0, 5.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(scan, min_size=1, max_size=30))
def test_limit_kernel_matches_reference(scans):
    limits, deadband = limit_arrays()
    active = np.zeros((3, 4), dtype=np.uint8)
    reference_active = [[0] * 4 for _ in range(3)]
    out = [np.zeros(12, dtype=np.int64) for _ in range(3)]
    for rows in scans:
        value = np.array([v for v, _ in rows])
        quality = np.array([q for _, q in rows], dtype=np.uint8)
        count = evaluate_limits(value, quality, limits, deadband, active, *out)
        kernel = [(int(out[0][i]), int(out[1][i]), int(out[2][i])) for i in range(count)]
        assert kernel == evaluate_limits_reference(value, quality, limits, deadband, reference_active)
        assert active.tolist() == reference_active


def run_limits(sequence, deadband=2.0):
    limits = np.array([[90.0, 80.0, 20.0, 10.0]])
    active = np.zeros((1, 4), dtype=np.uint8)
    out = [np.zeros(4, dtype=np.int64) for _ in range(3)]
    events = []
    for value in sequence:
        count = evaluate_limits(np.array([value]), np.zeros(1, dtype=np.uint8), limits, np.array([deadband]),
                                active, *out)
        events += [("HH", "H", "L", "LL")[out[1][i]] + ("+" if out[2][i] == RAISE else "-") for i in range(count)]
    return events


def test_deadband_stops_chattering_at_the_limit():
    assert run_limits([79.0, 80.0, 79.5, 80.1, 79.0, 77.9]) == ["H+", "H-"]
    assert run_limits([79.0, 80.0, 79.5, 80.1, 79.0], deadband=0.0) == ["H+", "H-", "H+", "H-"]


def test_high_high_raises_both_levels_and_low_side_mirrors():
    assert run_limits([50.0, 95.0, 50.0]) == ["HH+", "H+", "HH-", "H-"]
    assert run_limits([50.0, 5.0, 13.0]) == ["L+", "LL+", "LL-"]
    assert RETURN == 0


def test_bad_quality_holds_alarm_state():
    limits, deadband = limit_arrays()
    active = np.zeros((3, 4), dtype=np.uint8)
    out = [np.zeros(12, dtype=np.int64) for _ in range(3)]
    evaluate_limits(np.array([95.0, 0.0, 50.0]), np.zeros(3, dtype=np.uint8), limits, deadband, active, *out)
    count = evaluate_limits(np.array([0.0, 0.0, 50.0]), np.array([17, 0, 0], dtype=np.uint8), limits, deadband,
                            active, *out)
    assert count == 0 and active[0].tolist() == [1, 1, 0, 0]


report_scan = st.tuples(st.lists(st.tuples(values, st.sampled_from([0, 0, 17]), st.booleans()), min_size=4, max_size=4),
                        st.floats(0.0, 30.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(report_scan, min_size=1, max_size=30))
def test_report_kernel_matches_reference(scans):
    size = 4
    deadband = np.array([0.0, 1.0, 5.0, 0.5])
    max_interval = np.array([10.0, 60.0, 5.0, 1e9])
    state = [np.full(size, np.nan), np.full(size, 255, dtype=np.uint8), np.full(size, -np.inf), np.full(size, -np.inf)]
    reference = [array.copy() for array in state]
    value, quality, updated = np.full(size, np.nan), np.zeros(size, dtype=np.uint8), np.zeros(size)
    out_rows, out_fresh = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.bool_)
    now = 0.0
    for rows, step in scans:
        now += step
        for row, (new_value, new_quality, written) in enumerate(rows):
            if written:
                value[row], quality[row], updated[row] = new_value, new_quality, now
        count = select_reports(value, quality, updated, now, deadband, max_interval, *state, out_rows, out_fresh)
        expected = select_reports_reference(value, quality, updated, now, deadband, max_interval, *reference)
        assert [(int(out_rows[i]), bool(out_fresh[i])) for i in range(count)] == expected
        for ours, theirs in zip(state, reference):
            np.testing.assert_array_equal(ours, theirs)


def test_report_by_exception_deadband_and_max_interval():
    value, quality, updated = np.array([10.0]), np.zeros(1, dtype=np.uint8), np.array([0.0])
    state = [np.full(1, np.nan), np.full(1, 255, dtype=np.uint8), np.full(1, -np.inf), np.full(1, -np.inf)]
    out_rows, out_fresh = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.bool_)
    reported = []
    for now, new_value in [(0, 10.0), (1, 10.4), (2, 10.6), (3, 10.7), (70, 10.7)]:
        value[0], updated[0] = new_value, now
        if select_reports(value, quality, updated, float(now), np.array([0.5]), np.array([60.0]), *state,
                          out_rows, out_fresh):
            reported.append(now)
    assert reported == [0, 2, 70]
