"""The report-by-exception kernel against its plain-Python reference, on random sequences of scans.

(The alarm kernels are compared with theirs through the whole engine in test_rules_properties.py.)
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.report import select_reports_reference

values = st.one_of(st.floats(-20, 120, allow_nan=False), st.just(float("nan")))


report_scan = st.tuples(st.lists(st.tuples(values, st.sampled_from([0, 0, 17]), st.booleans()), min_size=4, max_size=4),
                        st.floats(0.0, 30.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(report_scan, min_size=1, max_size=30))
def test_report_kernel_matches_reference(compiled, scans):
    size = 4
    deadband = np.array([0.0, 1.0, 5.0, 0.5])
    max_interval = np.array([10.0, 60.0, 5.0, 1e9])
    every_read = np.array([False, False, True, False])
    state = [np.full(size, np.nan), np.full(size, 255, dtype=np.uint8), np.full(size, -np.inf), np.full(size, -np.inf)]
    reference = [array.copy() for array in state]
    value, quality, updated = np.full(size, np.nan), np.zeros(size, dtype=np.uint8), np.zeros(size)
    out_rows = np.zeros(size, dtype=np.int64)
    now = 0.0
    for rows, step in scans:
        now += step
        for row, (new_value, new_quality, written) in enumerate(rows):
            if written:
                value[row], quality[row], updated[row] = new_value, new_quality, now
        count = compiled.select_reports(value, quality, updated, now, deadband, max_interval, every_read, *state,
                                        out_rows)
        expected = select_reports_reference(value, quality, updated, now, deadband, max_interval, every_read,
                                            *reference)
        assert [int(row) for row in out_rows[:count]] == expected
        for ours, theirs in zip(state, reference):
            np.testing.assert_array_equal(ours, theirs)


def test_report_by_exception_deadband_and_max_interval(compiled):
    value, quality, updated = np.array([10.0]), np.zeros(1, dtype=np.uint8), np.array([0.0])
    state = [np.full(1, np.nan), np.full(1, 255, dtype=np.uint8), np.full(1, -np.inf), np.full(1, -np.inf)]
    out_rows = np.zeros(1, dtype=np.int64)
    reported = []
    for now, new_value in [(0, 10.0), (1, 10.4), (2, 10.6), (3, 10.7), (70, 10.7)]:
        value[0], updated[0] = new_value, now
        if compiled.select_reports(value, quality, updated, float(now), np.array([0.5]), np.array([60.0]),
                                   np.zeros(1, np.bool_), *state, out_rows):
            reported.append(now)
    assert reported == [0, 2, 70]
