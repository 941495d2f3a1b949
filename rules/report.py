"""Report-by-exception: which rows become stored samples on this scan; the kernel is `rules.kernels.report`.

A row is reported only with a reading newer than the one last reported, and then when its quality changed,
its value moved by more than the deadband, or `max_interval` seconds passed since it was last
reported. A reading is a driver's write, including the qualities it sets without a value: a driver
marks the rows of a device that stays down at every failed attempt, so the outage is re-reported
every `max_interval` as data rather than as silence. A row with no new reading is never re-reported,
so no sample ever repeats an earlier one. Times are monotonic-safe: the caller passes the scan time and
the arrays of last-report times on the same clock. The kernel only chooses rows; the caller stamps
each with the time of the row's latest read (`PointTable.gateway_ts`), never with the scan time.
"""

from __future__ import annotations



def select_reports_reference(values, quality, updated, now, deadband, max_interval, every_read,
                             last_value, last_quality, last_time, last_update):
    """Plain-Python twin of `select_reports`; returns the rows to report."""
    rows = []
    for row, value in enumerate(values):
        if every_read[row]:
            continue
        if updated[row] <= last_update[row]:
            continue
        due = now - last_time[row] >= max_interval[row]
        previous = last_value[row]
        if quality[row] != last_quality[row] or due:
            report = True
        elif value != value or previous != previous:
            report = (value != value) != (previous != previous)
        else:
            report = abs(value - previous) > deadband[row]
        if report:
            rows.append(row)
            last_value[row], last_quality[row], last_time[row] = value, quality[row], now
            last_update[row] = updated[row]
    return rows
