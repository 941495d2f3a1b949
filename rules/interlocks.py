"""Interlock-bypass supervision (IEC 61511 practice): the kernel (`rules.kernels.interlocks`) is described
here, beside its plain-Python reference.

Per interlock, each scan: read its status tags (bypass tags non-zero, or in-service tags zero, mean
bypassed; with several tags any one bypassed is enough), then raise or clear one flag per watched
condition. Each flag edge becomes an event with its own priority (`rules.engine`):

    started / ended          the interlock is bypassed / restored (in service again)
    unauthorized             bypassed with no authorization in force (none, revoked, not yet begun,
                             or one that ended before this bypass began)
    expired                  the authorization ran out while the bypass it covered goes on
    trip_while_bypassed      bypassed while its trip condition is true: the plant runs on a
                             protection that would have acted
    measurement_bad          bypassed while a protected measurement (a `protects` tag, or with none
                             listed a tag of the trip condition) has bad quality or no number: the
                             plant runs without the protection and without the measurement
    status_bad               a status tag has bad quality (the bypass state is held as last known)
                             (a tag not read yet since start-up, NO_VALUE, holds the state too but is
                             no fault: the driver soon reads it or reports why it cannot)
    overdue                  bypassed longer than the interlock's maximum bypass duration, counting every
                             episode under the current authorization (`bypassed_before`: a restore
                             for a second does not reset it); without an authorization, this episode
    too_many (per unit)      more interlocks of one production unit bypassed than it allows

Authorizations live in `rules.bypass.BypassRegistry`; the engine copies each interlock's window
(wall clock `auth_from` .. `auth_until`, NaN when none) and the seconds already bypassed under it into
arrays for the kernel. Windows are compared on the wall clock only: the bypass's start is kept on
both clocks (`bypass_since` monotonic for durations, `bypass_wall` for the window), so a clock step
between two scans cannot turn an expired authorization into none at all.
"""

from __future__ import annotations

import math


from core.types import QUALITY_BAD_MIN, Quality
from rules.expr import UNKNOWN

BAD = QUALITY_BAD_MIN
NO_VALUE = int(Quality.NO_VALUE)
F_BYPASSED, F_UNAUTHORIZED, F_EXPIRED, F_TRIP, F_STATUS_BAD, F_OVERDUE, F_MEASUREMENT_BAD = range(7)
FLAG_EVENTS = ("started", "unauthorized", "expired", "trip_while_bypassed", "status_bad", "overdue", "measurement_bad")
N_FLAGS = 7


def update_interlocks_reference(values, quality, expr_out, now_mono, now_wall, status_start, status_rows,
                                status_invert, trip_slot, unit, max_bypass, unit_max, protect_start, protect_rows,
                                auth_from, auth_until, bypassed, trip, bypass_since, bypass_wall, bypassed_before,
                                flags, unit_flag, unit_count, in_service, in_service_quality, out_interlock, out_flag,
                                out_unit):
    edges = []
    for k in range(len(bypassed)):
        readings, bad_qualities, unread = [], [], False
        for s in range(status_start[k], status_start[k + 1]):
            row = status_rows[s]
            if quality[row] == NO_VALUE:
                unread = True
            elif quality[row] >= BAD or math.isnan(values[row]):
                bad_qualities.append(max(int(quality[row]), BAD))
            else:
                readings.append((values[row] != 0.0) != bool(status_invert[s]))
        if any(readings):
            state = 1
        elif bad_qualities or unread:
            state = int(bypassed[k])
        else:
            state = 0
        if state and not bypassed[k]:
            bypass_since[k] = now_mono
            bypass_wall[k] = now_wall
        bypassed[k] = state
        in_service[k] = 0.0 if state else 1.0
        in_service_quality[k] = 0 if any(readings) or not (bad_qualities or unread) \
            else max(bad_qualities + [NO_VALUE])
        if trip_slot[k] >= 0 and expr_out[trip_slot[k]] != UNKNOWN:
            trip[k] = expr_out[trip_slot[k]]
        has_window = not math.isnan(auth_until[k])
        authorized = has_window and auth_from[k] <= now_wall < auth_until[k]
        # an authorization that ended before this bypass began does not cover it: that is unauthorized
        began_under_it = has_window and bypass_wall[k] < auth_until[k]
        expired = bool(state) and has_window and now_wall >= auth_until[k] and began_under_it
        wanted = {
            F_BYPASSED: state,
            F_UNAUTHORIZED: state and not authorized and not expired,
            F_EXPIRED: expired,
            F_TRIP: state and trip[k] == 1,
            F_STATUS_BAD: bool(bad_qualities),
            F_OVERDUE: state and bypassed_before[k] + now_mono - bypass_since[k] >= max_bypass[k],
            F_MEASUREMENT_BAD: state and any(
                quality[row] != NO_VALUE and (quality[row] >= BAD or math.isnan(values[row]))
                for row in protect_rows[protect_start[k]:protect_start[k + 1]]),
        }
        for f in range(N_FLAGS):
            if int(bool(wanted[f])) != flags[k, f]:
                flags[k, f] = int(bool(wanted[f]))
                edges.append((k, f))
    unit_edges = []
    counts = [0] * len(unit_count)
    for k, state in enumerate(bypassed):
        counts[unit[k]] += int(state)
    unit_count[:] = counts
    for u, count in enumerate(counts):
        if int(count > unit_max[u]) != unit_flag[u]:
            unit_flag[u] = int(count > unit_max[u])
            unit_edges.append(u)
    for n, (k, f) in enumerate(edges):
        out_interlock[n], out_flag[n] = k, f
    for n, u in enumerate(unit_edges):
        out_unit[n] = u
    return len(edges), len(unit_edges)
