"""The ISA-18.2 alarm state machine kernel of `rules.isa` (the rules, the operator actions and the
plain-Python twin are there)."""

from __future__ import annotations

import numpy as np
from numba import njit

from rules.expr import UNKNOWN
from rules.isa import ACKED, DSUPR, NORM, OOSRV, RTNUN, SHLVD, UNACK


@njit(cache=True, nogil=True)
def update_alarms(raw, expr_out, now, stale_after, on_delay, off_delay, latching, realarm, supp_slot, supp_expr,
                  supp, active, pending, paused, state, latch, since, active_since, stale, shelved_until, oneshot,
                  oos, hidden, out_index, out_prev, out_stale, counts):
    """One scan of the state machine; transitions go to out_index/out_prev (new state in `state`)."""
    for g in range(supp.shape[0]):
        r = expr_out[supp_expr[g]]
        supp[g] = 1 if r == 1 else 0  # unknown: not suppressed
    n_out = n_stale = n_active = n_unack = n_shelved = n_suppressed = n_oos = 0  # what `counts` receives
    for i in range(raw.shape[0]):
        r = raw[i]
        if state[i] == NORM and active[i] == 0 and (r == 0 or r == UNKNOWN) and np.isnan(pending[i]) \
                and supp_slot[i] < 0 and oos[i] == 0 and np.isnan(shelved_until[i]):
            continue  # the common case, quiet and normal: nothing can change
        rose = False
        if r == UNKNOWN:
            if not np.isnan(pending[i]) and np.isnan(paused[i]):
                paused[i] = now
        elif r != active[i]:
            if np.isnan(pending[i]):
                pending[i] = now
            elif not np.isnan(paused[i]):
                pending[i] += now - paused[i]
            paused[i] = np.nan
            delay = on_delay[i] if r == 1 else off_delay[i]
            if now - pending[i] >= delay:
                active[i] = r
                pending[i] = np.nan
                if r == 1:
                    active_since[i] = now
                    rose = True
                else:
                    stale[i] = 0
        else:
            pending[i] = np.nan
            paused[i] = np.nan
        a = active[i] == 1
        shelved = not np.isnan(shelved_until[i])
        if shelved and (now >= shelved_until[i] or (oneshot[i] == 1 and not a)):
            shelved_until[i] = np.nan
            oneshot[i] = 0
            shelved = False
        prev = state[i]
        g = supp_slot[i]
        if oos[i] == 1:
            new = OOSRV
        elif shelved:
            new = SHLVD
        elif g >= 0 and supp[g] == 1:
            new = DSUPR
        elif prev >= SHLVD or prev == NORM or prev == RTNUN:
            new = UNACK if a or latch[i] == 1 else (RTNUN if prev == RTNUN else NORM)
        elif prev == UNACK:
            new = RTNUN if not a and latch[i] == 0 else UNACK
        else:  # ACKED
            if not a and latch[i] == 0:
                new = NORM
            elif a and realarm[i] > 0.0 and now - since[i] >= realarm[i]:
                new = UNACK
            else:
                new = ACKED
        if a and latching[i] == 1 and (new == UNACK or new == ACKED or new == SHLVD):
            latch[i] = 1
        if new >= SHLVD:
            if prev < SHLVD:
                hidden[i] = 0
            if rose:
                hidden[i] += 1
        if new != prev:
            state[i] = new
            since[i] = now
            out_index[n_out] = i
            out_prev[n_out] = prev
            n_out += 1
        if new == UNACK or new == ACKED:
            if a:
                n_active += 1
                if stale[i] == 0 and now - active_since[i] >= stale_after:
                    stale[i] = 1
                    out_stale[n_stale] = i
                    n_stale += 1
        if new == UNACK or new == RTNUN:
            n_unack += 1
        elif new == SHLVD:
            n_shelved += 1
        elif new == DSUPR:
            n_suppressed += 1
        elif new == OOSRV:
            n_oos += 1
    counts[0], counts[1], counts[2], counts[3] = n_out, n_stale, n_active, n_unack
    counts[4], counts[5], counts[6] = n_shelved, n_suppressed, n_oos

