"""Alarm conditions per rule kind: the kernels (`rules.kernels.conditions`) described, with their constants
and their plain-Python references.

Each kernel reads the point table (`values` float64, `quality` uint8) and writes one raw condition
per alarm into `raw`: 0 clear, 1 active, UNKNOWN when it cannot be decided. A value is usable when
its quality is good or uncertain (< 16) and it is not NaN; anything else is UNKNOWN, and an unknown
condition changes nothing downstream (the bad-quality alarm kind reports the data problem itself).
A tag never read yet (NO_VALUE, at start-up before its device's first poll) is no data problem: the
quality kind holds too, until the driver gives a reading or a bad quality with its reason.

Hysteresis (deadband) state lives in `cond` (uint8, one per alarm): a high comparison becomes active
at `signal >= limit` and clears only at `signal < limit - deadband`.
"""

from __future__ import annotations

import math


from core.types import QUALITY_BAD_MIN, Quality
from rules.expr import UNKNOWN

BAD = QUALITY_BAD_MIN
STALE = int(Quality.STALE)
NO_VALUE = int(Quality.NO_VALUE)

# direction / mode codes
BOTH, RISE, FALL = 0, 1, 2  # rate: both, rise, fall; deviation: both, high, low
QUALITY_BAD, QUALITY_BAD_OR_STALE, QUALITY_NOT_GOOD = 0, 1, 2
RATE_SLOTS = 16  # samples kept per rate-of-change alarm; spaced window / (RATE_SLOTS - 1) apart


def limit_conditions_reference(values, quality, rows, setpoint, deadband, high, cond, raw):
    for i, row in enumerate(rows):
        value = float(values[row])
        if quality[row] >= BAD or math.isnan(value):
            raw[i] = UNKNOWN
            continue
        if high[i]:
            active = value >= setpoint[i] if not cond[i] else not value < setpoint[i] - deadband[i]
        else:
            active = value <= setpoint[i] if not cond[i] else not value > setpoint[i] + deadband[i]
        cond[i] = raw[i] = int(active)


def deviation_conditions_reference(values, quality, rows, reference_rows, setpoint, mode, limit, deadband, cond, raw):
    for i, row in enumerate(rows):
        inputs = [int(row)] + ([int(reference_rows[i])] if reference_rows[i] >= 0 else [])
        if any(quality[r] >= BAD or math.isnan(values[r]) for r in inputs):
            raw[i] = UNKNOWN
            continue
        reference = float(values[reference_rows[i]]) if reference_rows[i] >= 0 else float(setpoint[i])
        difference = float(values[row]) - reference
        signal = {RISE: difference, FALL: -difference}.get(int(mode[i]), abs(difference))
        if cond[i]:
            active = not signal < limit[i] - deadband[i]
        else:
            active = signal >= limit[i]
        cond[i] = raw[i] = int(active)


def discrete_conditions_reference(values, quality, rows, state_start, states, cond, raw):
    for i, row in enumerate(rows):
        if quality[row] >= BAD or math.isnan(values[row]):
            raw[i] = UNKNOWN
            continue
        alarm_states = set(float(s) for s in states[state_start[i]:state_start[i + 1]])
        cond[i] = raw[i] = int(float(values[row]) in alarm_states)


def quality_conditions_reference(quality, rows, mode, cond, raw):
    tests = {QUALITY_BAD: lambda q: q >= BAD, QUALITY_BAD_OR_STALE: lambda q: q >= BAD or q == STALE,
             QUALITY_NOT_GOOD: lambda q: q != 0}
    for i, row in enumerate(rows):
        if quality[row] == NO_VALUE:
            raw[i] = UNKNOWN
            continue
        cond[i] = raw[i] = int(tests[int(mode[i])](int(quality[row])))


def rate_conditions_reference(values, quality, now, rows, scale, window, mode, limit, deadband,
                              sample_t, sample_v, head, count, cond, raw):
    slots = sample_t.shape[1]
    for i, row in enumerate(rows):
        value = float(values[row])
        if quality[row] >= BAD or math.isnan(value):
            raw[i] = UNKNOWN
            continue
        n, span = int(count[i]), float(window[i])
        kept = [(head[i] - n + k) % slots for k in range(n)]
        in_window = [slot for slot in kept if now - sample_t[i, slot] <= span]
        base = in_window[0] if in_window else None
        if base is None or not (now - sample_t[i, base] >= span / 2.0 and now - sample_t[i, base] > 0.0):
            raw[i] = UNKNOWN
        else:
            rate = (value - sample_v[i, base]) / (now - sample_t[i, base]) * scale[i]
            signal = {RISE: rate, FALL: -rate}.get(int(mode[i]), abs(rate))
            active = (not signal < limit[i] - deadband[i]) if cond[i] else signal >= limit[i]
            cond[i] = raw[i] = int(active)
        if n == 0 or now - sample_t[i, (head[i] - 1) % slots] >= span / (slots - 1):
            sample_t[i, head[i]], sample_v[i, head[i]] = now, value
            head[i] = (head[i] + 1) % slots
            count[i] = min(n + 1, slots)
