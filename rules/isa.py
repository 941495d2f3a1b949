"""The ISA-18.2 alarm state machine over all alarms at once: delays, latching, re-alarm, shelving,
suppression by design and out of service: the kernel (`rules.kernels.isa`) is described here, beside its
plain-Python reference and the operator actions.

Per alarm, each scan:
1. on/off delay: the raw condition (0, 1, UNKNOWN) must differ from `active` for on_delay (becoming
   active) or off_delay (clearing) seconds before `active` follows. UNKNOWN holds `active` (nothing is
   raised or cleared from data that cannot be trusted) and pauses a running delay: the time while the
   condition is unknown does not count, and the delay goes on from where it was (`paused` holds when
   the pause began), so intermittent bad quality cannot defer an alarm for ever.
2. a timed shelf expires at `shelved_until` (monotonic); a one-shot shelf also ends when the alarm clears.
3. the displayed state, by precedence OOSRV > SHLVD > DSUPR > the annunciation states:
   NORM -> UNACK on activation; UNACK -> RTNUN on return; ACKED -> NORM on return; RTNUN -> UNACK on
   activation; ACKED -> UNACK when still active `realarm` seconds after the ack. Leaving SHLVD/DSUPR/
   OOSRV goes to UNACK when active or latched, else NORM.
4. latch: a latching alarm latches whenever it is active while annunciated or shelved (an occurrence
   while shelved latches too); only an operator's reset, after the condition cleared, unlatches it. A
   latched alarm does not return (stays UNACK/ACKED), and stays latched through shelving, suppression
   by design and out of service.
5. occurrences while hidden: each activation while SHLVD, DSUPR or OOSRV counts in `hidden`, which
   restarts from 0 when the alarm enters one of those states from an annunciated one.
6. suppression by design fails open: a suppression condition that is UNKNOWN does not suppress.
7. stale: annunciated and active for `stale_after` seconds; reported once per activation.

Operator actions (`ack`, `shelve`, ...) are plain functions over the same arrays in `AlarmArrays`;
they change the state at once and return what changed, for `rules.engine` to turn into events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rules.expr import UNKNOWN

NORM, UNACK, ACKED, RTNUN, SHLVD, DSUPR, OOSRV = range(7)
STATE_NAMES = ("NORM", "UNACK", "ACKED", "RTNUN", "SHLVD", "DSUPR", "OOSRV")

# counts[] slots written by the kernel
C_TRANSITIONS, C_STALE, C_ACTIVE, C_UNACK, C_SHELVED, C_SUPPRESSED, C_OOS = range(7)


class ActionError(ValueError):
    """An operator action that cannot be done; the message says why."""


@dataclass
class AlarmArrays:
    """Configuration and state of n alarms, as arrays (the kernel's arguments)."""

    on_delay: np.ndarray
    off_delay: np.ndarray
    latching: np.ndarray  # uint8
    realarm: np.ndarray  # seconds, 0 off
    supp_slot: np.ndarray  # int64, index into `supp`, -1 none
    supp_expr: np.ndarray  # int64, per suppression slot, the expression result index
    supp: np.ndarray  # uint8 per suppression slot, held through UNKNOWN
    active: np.ndarray  # uint8
    pending: np.ndarray  # float64, NaN when no delay runs: when the delay began (shifted past pauses)
    paused: np.ndarray  # float64, NaN unless the running delay is paused on an UNKNOWN condition: since when
    state: np.ndarray  # uint8
    latch: np.ndarray  # uint8
    since: np.ndarray  # float64: when the current state was entered
    active_since: np.ndarray  # float64
    stale: np.ndarray  # uint8
    shelved_until: np.ndarray  # float64, NaN when not shelved
    oneshot: np.ndarray  # uint8
    oos: np.ndarray  # uint8
    hidden: np.ndarray  # int64: activations while SHLVD / DSUPR / OOSRV, since it last entered one of them
    out_index: np.ndarray  # int64 scratch
    out_prev: np.ndarray  # uint8 scratch
    out_stale: np.ndarray  # int64 scratch
    counts: np.ndarray  # int64[7]

    @classmethod
    def allocate(cls, n: int, n_supp: int) -> AlarmArrays:
        return cls(
            on_delay=np.zeros(n), off_delay=np.zeros(n), latching=np.zeros(n, np.uint8), realarm=np.zeros(n),
            supp_slot=np.full(n, -1, np.int64), supp_expr=np.zeros(n_supp, np.int64),
            supp=np.zeros(n_supp, np.uint8), active=np.zeros(n, np.uint8), pending=np.full(n, np.nan),
            paused=np.full(n, np.nan), state=np.zeros(n, np.uint8), latch=np.zeros(n, np.uint8), since=np.zeros(n),
            active_since=np.zeros(n), stale=np.zeros(n, np.uint8), shelved_until=np.full(n, np.nan),
            oneshot=np.zeros(n, np.uint8), oos=np.zeros(n, np.uint8), hidden=np.zeros(n, np.int64),
            out_index=np.zeros(n, np.int64),
            out_prev=np.zeros(n, np.uint8), out_stale=np.zeros(n, np.int64), counts=np.zeros(7, np.int64))

    def kernel_args(self):
        return (self.on_delay, self.off_delay, self.latching, self.realarm, self.supp_slot, self.supp_expr,
                self.supp, self.active, self.pending, self.paused, self.state, self.latch, self.since,
                self.active_since, self.stale, self.shelved_until, self.oneshot, self.oos, self.hidden,
                self.out_index, self.out_prev, self.out_stale, self.counts)

    def suppressed(self, i: int) -> bool:
        slot = int(self.supp_slot[i])
        return slot >= 0 and bool(self.supp[slot])


# The annunciation states as a table: (state, active, latched) -> next state, re-alarm aside.
_NEXT = {
    (NORM, True): UNACK, (NORM, False): NORM,
    (RTNUN, True): UNACK, (RTNUN, False): RTNUN,
    (UNACK, True): UNACK, (UNACK, False): RTNUN,
    (ACKED, True): ACKED, (ACKED, False): NORM,
}


HIDDEN = (SHLVD, DSUPR, OOSRV)


def update_alarms_reference(raw, expr_out, now, stale_after, on_delay, off_delay, latching, realarm, supp_slot,
                            supp_expr, supp, active, pending, paused, state, latch, since, active_since, stale,
                            shelved_until, oneshot, oos, hidden, out_index, out_prev, out_stale, counts):
    """Plain-Python twin of `update_alarms`, written from the ISA-18.2 transition table."""
    for g, slot in enumerate(supp_expr):
        supp[g] = int(expr_out[slot] == 1)  # suppression fails open: unknown is not suppressed
    transitions, stale_list = [], []
    tally = dict.fromkeys(("active", "unack", "shelved", "suppressed", "oos"), 0)
    for i, condition in enumerate(raw):
        condition = int(condition)
        was_active = bool(active[i])
        delay_running = not math.isnan(pending[i])
        if condition == UNKNOWN:
            if delay_running and math.isnan(paused[i]):
                paused[i] = now  # the delay stops counting until the condition is known again
        elif condition != active[i]:
            if not delay_running:
                pending[i] = now
            elif not math.isnan(paused[i]):
                pending[i] += now - paused[i]  # resume: the unknown time does not count
            paused[i] = math.nan
            if now - pending[i] >= (on_delay[i] if condition else off_delay[i]):
                active[i], pending[i] = condition, math.nan
                if condition:
                    active_since[i] = now
                else:
                    stale[i] = 0
        else:
            pending[i] = paused[i] = math.nan
        is_active = bool(active[i])
        if not math.isnan(shelved_until[i]):
            if now >= shelved_until[i] or (oneshot[i] and not is_active):
                shelved_until[i], oneshot[i] = math.nan, 0
        previous = int(state[i])
        if oos[i]:
            new = OOSRV
        elif not math.isnan(shelved_until[i]):
            new = SHLVD
        elif supp_slot[i] >= 0 and supp[supp_slot[i]]:
            new = DSUPR
        elif previous in HIDDEN or (previous in (NORM, RTNUN) and latch[i]):
            new = UNACK if is_active or latch[i] else NORM
        elif latch[i] and previous in (UNACK, ACKED):
            new = previous  # latched: stays until reset
        else:
            new = _NEXT[(previous, is_active)]
        if new == ACKED and is_active and realarm[i] > 0 and now - since[i] >= realarm[i]:
            new = UNACK
        if latching[i] and is_active and new in (UNACK, ACKED, SHLVD):
            latch[i] = 1  # only a reset unlatches
        if new in HIDDEN:
            if previous not in HIDDEN:
                hidden[i] = 0
            hidden[i] += is_active and not was_active
        if new != previous:
            state[i], since[i] = new, now
            transitions.append((i, previous))
        if new in (UNACK, ACKED) and is_active:
            tally["active"] += 1
            if not stale[i] and now - active_since[i] >= stale_after:
                stale[i] = 1
                stale_list.append(i)
        tally["unack"] += new in (UNACK, RTNUN)
        tally["shelved"] += new == SHLVD
        tally["suppressed"] += new == DSUPR
        tally["oos"] += new == OOSRV
    for k, (i, previous) in enumerate(transitions):
        out_index[k], out_prev[k] = i, previous
    for k, i in enumerate(stale_list):
        out_stale[k] = i
    counts[:] = [len(transitions), len(stale_list), tally["active"], tally["unack"], tally["shelved"],
                 tally["suppressed"], tally["oos"]]


# --- operator actions: rare, plain Python over the same arrays ----------------------------------------

def _resume_state(arrays: AlarmArrays, i: int) -> int:
    """Where an alarm goes when it leaves SHLVD / DSUPR / OOSRV: by its current condition."""
    if arrays.oos[i]:
        return OOSRV
    if not math.isnan(arrays.shelved_until[i]):
        return SHLVD
    if arrays.suppressed(i):
        return DSUPR
    if arrays.active[i]:
        arrays.latch[i] |= arrays.latching[i]
        return UNACK
    return UNACK if arrays.latch[i] else NORM  # latched: it stays latched until reset


def _enter(arrays: AlarmArrays, i: int, new: int, now: float) -> tuple[int, int]:
    previous = int(arrays.state[i])
    if new in HIDDEN and previous not in HIDDEN:
        arrays.hidden[i] = 0
    arrays.state[i] = new
    arrays.since[i] = now
    return previous, new


def ack(arrays: AlarmArrays, i: int, now: float) -> tuple[int, int]:
    state = int(arrays.state[i])
    if state == UNACK:
        return _enter(arrays, i, ACKED, now)
    if state == RTNUN:
        return _enter(arrays, i, NORM, now)
    raise ActionError(f"nothing to acknowledge: the alarm is {STATE_NAMES[state]}")


def shelve(arrays: AlarmArrays, i: int, now: float, seconds: float, maximum: float,
           one_shot: bool = False) -> tuple[int, int]:
    state = int(arrays.state[i])
    if state == OOSRV:
        raise ActionError("the alarm is out of service; return it to service before shelving")
    if not seconds > 0:
        raise ActionError("a shelf needs a duration longer than zero")
    if seconds > maximum:
        raise ActionError(f"shelving for {format_seconds(seconds)} exceeds the maximum of "
                          f"{format_seconds(maximum)} (rules.shelving.max_duration)")
    if one_shot and not arrays.active[i]:
        raise ActionError("one-shot shelving needs an active alarm (it ends when the alarm clears)")
    arrays.shelved_until[i] = now + seconds
    arrays.oneshot[i] = 1 if one_shot else 0
    return _enter(arrays, i, SHLVD, now)


def unshelve(arrays: AlarmArrays, i: int, now: float) -> tuple[int, int]:
    if math.isnan(arrays.shelved_until[i]):
        raise ActionError("the alarm is not shelved")
    arrays.shelved_until[i] = math.nan
    arrays.oneshot[i] = 0
    return _enter(arrays, i, _resume_state(arrays, i), now)


def out_of_service(arrays: AlarmArrays, i: int, now: float) -> tuple[int, int]:
    if arrays.oos[i]:
        raise ActionError("the alarm is already out of service")
    arrays.oos[i] = 1
    arrays.shelved_until[i] = math.nan
    arrays.oneshot[i] = 0
    return _enter(arrays, i, OOSRV, now)


def return_to_service(arrays: AlarmArrays, i: int, now: float) -> tuple[int, int]:
    if not arrays.oos[i]:
        raise ActionError("the alarm is not out of service")
    arrays.oos[i] = 0
    return _enter(arrays, i, _resume_state(arrays, i), now)


def reset(arrays: AlarmArrays, i: int, now: float) -> tuple[int, int]:
    """Reset a latched alarm whose condition has cleared; it returns to NORM (the reset acknowledges it)."""
    if not arrays.latch[i]:
        raise ActionError("the alarm is not latched")
    if arrays.active[i]:
        raise ActionError("the condition is still active; a latched alarm can be reset only after it cleared")
    arrays.latch[i] = 0
    state = int(arrays.state[i])
    return _enter(arrays, i, state if state in HIDDEN else NORM, now)


ACTIONS = {"ack": ack, "shelve": shelve, "unshelve": unshelve, "out_of_service": out_of_service,
           "return_to_service": return_to_service, "reset": reset}


def format_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
