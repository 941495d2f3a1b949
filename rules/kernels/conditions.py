"""The alarm-condition kernels of `rules.conditions` (what they decide, and their plain-Python twins, are
described there): limit, deviation, discrete, quality and rate of change."""

from __future__ import annotations

import numpy as np
from numba import njit

from rules.conditions import BAD, FALL, NO_VALUE, QUALITY_BAD, QUALITY_BAD_OR_STALE, RISE, STALE
from rules.expr import UNKNOWN


@njit(cache=True, nogil=True, inline="always")
def _hysteresis(cond, signal, limit, band, high):
    if high:
        if cond:
            return 0 if signal < limit - band else 1
        return 1 if signal >= limit else 0
    if cond:
        return 0 if signal > limit + band else 1
    return 1 if signal <= limit else 0


@njit(cache=True, nogil=True)
def limit_conditions(values, quality, rows, setpoint, deadband, high, cond, raw):
    """Analog HH/H/L/LL (and gas levels): one alarm per limit."""
    for i in range(rows.shape[0]):
        row = rows[i]
        value = values[row]
        if quality[row] >= BAD or np.isnan(value):
            raw[i] = UNKNOWN
            continue
        cond[i] = _hysteresis(cond[i], value, setpoint[i], deadband[i], high[i])
        raw[i] = cond[i]


@njit(cache=True, nogil=True)
def deviation_conditions(values, quality, rows, reference_rows, setpoint, mode, limit, deadband, cond, raw):
    """tag - reference (a tag, or a fixed setpoint where reference_rows is -1) against `limit`."""
    for i in range(rows.shape[0]):
        row = rows[i]
        value = values[row]
        if quality[row] >= BAD or np.isnan(value):
            raw[i] = UNKNOWN
            continue
        reference = setpoint[i]
        other = reference_rows[i]
        if other >= 0:
            reference = values[other]
            if quality[other] >= BAD or np.isnan(reference):
                raw[i] = UNKNOWN
                continue
        difference = value - reference
        if mode[i] == RISE:
            signal = difference
        elif mode[i] == FALL:
            signal = -difference
        else:
            signal = abs(difference)
        cond[i] = _hysteresis(cond[i], signal, limit[i], deadband[i], True)
        raw[i] = cond[i]


@njit(cache=True, nogil=True)
def discrete_conditions(values, quality, rows, state_start, states, cond, raw):
    """Active while the value equals one of the alarm's states (a pump tripped, a valve in a position)."""
    for i in range(rows.shape[0]):
        row = rows[i]
        value = values[row]
        if quality[row] >= BAD or np.isnan(value):
            raw[i] = UNKNOWN
            continue
        active = 0
        for s in range(state_start[i], state_start[i + 1]):
            if value == states[s]:
                active = 1
                break
        cond[i] = active
        raw[i] = active


@njit(cache=True, nogil=True)
def quality_conditions(quality, rows, mode, cond, raw):
    """Active while the tag has no good value; the alarm's on-delay is the 'for longer than N seconds'."""
    for i in range(rows.shape[0]):
        q = quality[rows[i]]
        if q == NO_VALUE:
            raw[i] = UNKNOWN
            continue
        if mode[i] == QUALITY_BAD:
            active = q >= BAD
        elif mode[i] == QUALITY_BAD_OR_STALE:
            active = q >= BAD or q == STALE
        else:
            active = q != 0
        cond[i] = 1 if active else 0
        raw[i] = cond[i]


@njit(cache=True, nogil=True)
def rate_conditions(values, quality, now, rows, scale, window, mode, limit, deadband,
                    sample_t, sample_v, head, count, cond, raw):
    """Rate of change over a window, in units per second times `scale` (60 for per minute).

    Each alarm keeps a ring of RATE_SLOTS usable samples spaced at least window / (RATE_SLOTS - 1)
    apart. The rate is measured against the oldest kept sample no older than `window` and at least
    window / 2 old; until there is one (start-up, after a long outage) the condition is UNKNOWN.
    """
    slots = sample_t.shape[1]
    for i in range(rows.shape[0]):
        row = rows[i]
        value = values[row]
        if quality[row] >= BAD or np.isnan(value):
            raw[i] = UNKNOWN
            continue
        span = window[i]
        base = -1
        n = count[i]
        for k in range(n):  # oldest first
            slot = (head[i] - n + k) % slots
            age = now - sample_t[i, slot]
            if age <= span:
                if age >= span / 2.0 and age > 0.0:
                    base = slot
                break
        if base < 0:
            raw[i] = UNKNOWN
        else:
            rate = (value - sample_v[i, base]) / (now - sample_t[i, base]) * scale[i]
            if mode[i] == RISE:
                signal = rate
            elif mode[i] == FALL:
                signal = -rate
            else:
                signal = abs(rate)
            cond[i] = _hysteresis(cond[i], signal, limit[i], deadband[i], True)
            raw[i] = cond[i]
        newest = (head[i] - 1) % slots
        if n == 0 or now - sample_t[i, newest] >= span / (slots - 1):
            sample_t[i, head[i]] = now
            sample_v[i, head[i]] = value
            head[i] = (head[i] + 1) % slots
            if n < slots:
                count[i] = n + 1

