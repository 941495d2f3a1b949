"""Analog limit alarms HH/H/L/LL with deadband (ISA-18.2), as a numba kernel and its reference.

Limits are an (n, 4) array in the order HH, H, L, LL, NaN where a limit is not configured. A high
limit is active from `value >= limit` until `value < limit - deadband`; a low limit from
`value <= limit` until `value > limit + deadband`. Rows without good quality keep their state:
the value is not trusted to raise or clear anything (bad quality is an alarm of its own kind).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LIMIT_NAMES = ("HH", "H", "L", "LL")
HIGH_LIMITS = (0, 1)

RAISE = 1
RETURN = 0


@njit(cache=True, nogil=True)
def evaluate_limits(values, quality, limits, deadband, active, out_row, out_limit, out_kind):
    """Update `active` (n, 4 uint8) in place; write transitions to the out arrays; return their count."""
    count = 0
    for row in range(values.shape[0]):
        if quality[row] != 0:
            continue
        value = values[row]
        if np.isnan(value):
            continue
        band = deadband[row]
        for limit in range(4):
            setpoint = limits[row, limit]
            if np.isnan(setpoint):
                continue
            if limit < 2:
                raised = value >= setpoint
                cleared = value < setpoint - band
            else:
                raised = value <= setpoint
                cleared = value > setpoint + band
            if active[row, limit] == 0 and raised:
                active[row, limit] = 1
                out_row[count], out_limit[count], out_kind[count] = row, limit, RAISE
                count += 1
            elif active[row, limit] == 1 and cleared:
                active[row, limit] = 0
                out_row[count], out_limit[count], out_kind[count] = row, limit, RETURN
                count += 1
    return count


def evaluate_limits_reference(values, quality, limits, deadband, active):
    """Plain-Python twin of `evaluate_limits`; returns the transitions as (row, limit, kind) tuples."""
    transitions = []
    for row, value in enumerate(values):
        if quality[row] != 0 or value != value:
            continue
        for limit, setpoint in enumerate(limits[row]):
            if setpoint != setpoint:
                continue
            if limit in HIGH_LIMITS:
                raised, cleared = value >= setpoint, value < setpoint - deadband[row]
            else:
                raised, cleared = value <= setpoint, value > setpoint + deadband[row]
            if not active[row][limit] and raised:
                active[row][limit] = 1
                transitions.append((row, limit, RAISE))
            elif active[row][limit] and cleared:
                active[row][limit] = 0
                transitions.append((row, limit, RETURN))
    return transitions
