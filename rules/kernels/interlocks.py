"""The interlock-bypass supervision kernel of `rules.interlocks` (the flags it raises and its plain-Python
twin are described there)."""

from __future__ import annotations

import numpy as np
from numba import njit

from rules.expr import UNKNOWN
from rules.interlocks import BAD, N_FLAGS, NO_VALUE


@njit(cache=True, nogil=True)
def update_interlocks(values, quality, expr_out, now_mono, now_wall, status_start, status_rows, status_invert,
                      trip_slot, unit, max_bypass, unit_max, protect_start, protect_rows, auth_from, auth_until,
                      bypassed, trip, bypass_since, bypass_wall, bypassed_before, flags, unit_flag, unit_count,
                      in_service, in_service_quality,
                      out_interlock, out_flag, out_unit):
    """Update flags; flag edges go to out_interlock/out_flag (new value in `flags`), unit edges to
    out_unit. Returns (flag edges, unit edges)."""
    n_out = 0
    for k in range(bypassed.shape[0]):
        any_bypassed = False
        unread = False
        worst = 0
        for s in range(status_start[k], status_start[k + 1]):
            row = status_rows[s]
            q = quality[row]
            value = values[row]
            if q == NO_VALUE:
                unread = True
                continue
            if q >= BAD or np.isnan(value):
                worst = max(worst, q)
                worst = max(worst, BAD)
                continue
            if (value != 0.0) != (status_invert[s] == 1):
                any_bypassed = True
        if any_bypassed:
            now_bypassed = 1
        elif worst >= BAD or unread:
            now_bypassed = bypassed[k]  # unknown: hold the last known state
        else:
            now_bypassed = 0
        if now_bypassed == 1 and bypassed[k] == 0:
            bypass_since[k] = now_mono
            bypass_wall[k] = now_wall
        bypassed[k] = now_bypassed
        in_service[k] = 0.0 if now_bypassed == 1 else 1.0
        in_service_quality[k] = 0 if any_bypassed or (worst < BAD and not unread) else max(worst, NO_VALUE)
        slot = trip_slot[k]
        if slot >= 0 and expr_out[slot] != UNKNOWN:
            trip[k] = expr_out[slot]
        b = now_bypassed == 1
        authorized = auth_from[k] <= now_wall < auth_until[k]
        expired = b and now_wall >= auth_until[k] and bypass_wall[k] < auth_until[k]
        blind = False
        for p in range(protect_start[k], protect_start[k + 1]):
            row = protect_rows[p]
            if quality[row] != NO_VALUE and (quality[row] >= BAD or np.isnan(values[row])):
                blind = True
        new_flags = (b, b and not authorized and not expired, expired, b and trip[k] == 1, worst >= BAD,
                     b and bypassed_before[k] + now_mono - bypass_since[k] >= max_bypass[k], b and blind)
        for f in range(N_FLAGS):
            value = 1 if new_flags[f] else 0
            if value != flags[k, f]:
                flags[k, f] = value
                out_interlock[n_out] = k
                out_flag[n_out] = f
                n_out += 1
    unit_count[:] = 0
    for k in range(bypassed.shape[0]):
        if bypassed[k] == 1:
            unit_count[unit[k]] += 1
    n_unit = 0
    for u in range(unit_count.shape[0]):
        over = 1 if unit_count[u] > unit_max[u] else 0
        if over != unit_flag[u]:
            unit_flag[u] = over
            out_unit[n_unit] = u
            n_unit += 1
    return n_out, n_unit

