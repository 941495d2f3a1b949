"""The report-by-exception kernel of `rules.report` (when a row is reported, and the plain-Python twin,
are described there)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def select_reports(values, quality, updated, now, deadband, max_interval, every_read,
                   last_value, last_quality, last_time, last_update, out_rows):
    """Write the rows to report into `out_rows`, update the last-report state, return the count.
    Rows marked in `every_read` are skipped: their reads are stored one by one (gatewayd.values.readlog)."""
    count = 0
    for row in range(values.shape[0]):
        if every_read[row]:
            continue
        if updated[row] <= last_update[row]:
            continue  # nothing read since the reading last reported
        due = now - last_time[row] >= max_interval[row]
        value = values[row]
        previous = last_value[row]
        if quality[row] != last_quality[row] or due:
            report = True
        elif np.isnan(value) or np.isnan(previous):
            report = np.isnan(value) != np.isnan(previous)
        else:
            report = abs(value - previous) > deadband[row]
        if report:
            out_rows[count] = row
            count += 1
            last_value[row] = value
            last_quality[row] = quality[row]
            last_time[row] = now
            last_update[row] = updated[row]
    return count

