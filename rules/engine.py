"""The rule engine: one object the daemon builds from the rules config and calls every scan.

    engine = RuleEngine.build(config.rules, table.rows, len(table), tag_alarms=..., tag_info=...)
    events = engine.evaluate(table.value, table.quality, time.monotonic(), time.time(), table.updated,
                             table.gateway_ts)
    events = engine.act("ack", "PT101.HH", user="alice", reason="seen")
    events = engine.request_bypass("SIS-101", requested_by="alice", ..., window=3600)  # four eyes:
    events = engine.approve(1, approved_by="bob")                                       # two accounts
    engine.alarms()                      # for `gatewayd alarms`
    engine.in_service                    # float64 per interlock (1 in service, 0 bypassed), with
    engine.in_service_quality            # its quality (bad while a status tag is bad)
    saved = engine.state_dict(); engine.restore(saved)   # across a restart (rules.engine_state)

Every alarm has an id: `TAG.HH` / `TAG.H` / `TAG.L` / `TAG.LL` for analog limits, `TAG.GAS1` / `TAG.GAS2`
for gas channels, and its own `id` for the rules under `rules.alarms`. The hot path is numba kernels
over preallocated arrays (`backend="numba"`: built ahead of time, else compiled just in time, as
`rules.kernels.load` chooses); `backend="reference"` runs the plain-Python twins over
the same arrays, for tests and benchmarks.

Events are `core.types.Event` with JSON-ready data; kinds: `alarm`, `gas_alarm`, `bypass`,
`trip`, `trip_history`, `final_element` (`rules.trips`), `audit`, `analytics`. Within a scan: gas
alarms first (level 2 before level 1, toxic before combustible), then other alarms in configuration
order, then bypass events, then trip events, then analytics.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from core.types import Event, Priority, Quality
from rules import conditions as C
from rules import interlocks as IL
from rules import isa
from rules.analytics import AlarmAnalytics
from rules import engine_state, managed
from rules.bypass import BypassRegistry, audit_event, require_four_eyes
from rules.requests import RequestBook
from rules.gas import gas_order_key
from rules.hidden import HiddenReport
from rules.isa import STATE_NAMES, ActionError, AlarmArrays
from rules.compile import CompiledRules, compile_rules
from rules.expr import UNKNOWN
from rules.model import DEFAULT_BYPASS_PRIORITIES, RulesConfig, TagAlarmConfig, jsonable
from rules.kernels.load import kernels
from rules.program import make_stack, run_programs_reference
from rules.trips import TripRecorder
from rules.texts import alarm_message, bypass_message, too_many_message

class RuleEngine:
    """Build with `RuleEngine.build`; see the module docstring."""

    def __init__(self):
        raise TypeError("use RuleEngine.build(...)")

    # ---------------------------------------------------------------- building

    @classmethod
    def build(cls, rules: RulesConfig | None, tag_rows: Mapping[str, int], size: int,
              tag_alarms: Iterable[TagAlarmConfig] = (), tag_info: Mapping[str, Any] | None = None,
              backend: str = "numba", now_monotonic: float | None = None,
              now_wall: float | None = None) -> RuleEngine:
        """`tag_rows` maps tag name to point-table row; `tag_alarms` are the per-tag `alarms:` blocks;
        `tag_info` (name -> TagConfig-like with `unit`) only adds units to messages."""
        if backend not in ("numba", "reference"):
            raise ValueError("backend is 'numba' or 'reference'")
        rules = rules or RulesConfig()
        compiled = compile_rules(rules, tag_rows, tag_alarms, tag_info)
        self = object.__new__(cls)
        self._construct(rules, compiled, dict(tag_rows), size, backend, now_monotonic, now_wall)
        return self

    def _construct(self, rules: RulesConfig, compiled: CompiledRules, tag_rows: dict[str, int], size: int,
                   backend: str, now_monotonic: float | None, now_wall: float | None) -> None:
        """The state beside the compiled arrays: alarm states, interlock states, scratch, analytics."""
        self.rules, self.compiled, self.backend, self.size, self.tag_rows = rules, compiled, backend, size, tag_rows
        self._kernels = kernels() if backend == "numba" else None  # chosen (and said) once per process
        self.infos, self.index, self.bounds = compiled.infos, compiled.index, compiled.bounds
        n = len(self.infos)
        conditions = compiled.conditions
        self._limit = compiled.limits.args()
        self._rate, self._deviation = conditions.rate, conditions.deviation
        self._discrete, self._quality = conditions.discrete, conditions.quality
        n_rate = len(conditions.rate[0])
        self._rate_buffers = (np.zeros((n_rate, C.RATE_SLOTS)), np.zeros((n_rate, C.RATE_SLOTS)),
                              np.zeros(n_rate, np.int64), np.zeros(n_rate, np.int64))
        self.program = compiled.program
        self._stack = make_stack(self.program)
        self.expr_out = np.zeros(max(self.program.count, 1), np.uint8)
        self._expr_alarm_slots = np.arange(len(conditions.expressions), dtype=np.int64)
        suppression = compiled.suppression
        self.suppression_sources = suppression.sources
        arrays = AlarmArrays.allocate(n, len(suppression.expressions))
        behaviour = compiled.behaviour
        arrays.on_delay[:], arrays.off_delay[:] = behaviour.on_delay, behaviour.off_delay
        arrays.latching[:], arrays.realarm[:] = behaviour.latching, behaviour.realarm
        arrays.supp_slot[:] = suppression.alarm_slot
        first = compiled.first_suppression_slot
        arrays.supp_expr[:] = np.arange(first, first + len(suppression.expressions))
        self._state_slots = np.array(suppression.group_slot, np.int64) + first
        self.arrays = arrays
        self.cond = np.zeros(n, np.uint8)
        self.raw = np.zeros(n, np.uint8)

        interlocks = compiled.interlocks
        self.interlock_ids = interlocks.ids
        self.interlock_index = {interlock: k for k, interlock in enumerate(interlocks.ids)}
        self.unit_names = interlocks.unit_names
        self._il_config = interlocks.args()
        k, n_units = len(interlocks.ids), len(interlocks.unit_names)
        self.auth_from = np.full(k, np.nan)
        self.auth_until = np.full(k, np.nan)
        self.bypassed = np.zeros(k, np.uint8)
        self.trip = np.zeros(k, np.uint8)
        self.bypass_since = np.zeros(k)  # monotonic: when the current (or last) bypass began, for durations
        self.bypass_wall = np.zeros(k)  # the same on the wall clock, for authorization windows and records
        self.bypassed_before = np.zeros(k)  # seconds of earlier episodes under the current authorization
        self.flags = np.zeros((k, IL.N_FLAGS), np.uint8)
        self.unit_flag = np.zeros(n_units, np.uint8)
        self.unit_count = np.zeros(n_units, np.int64)
        self.in_service = np.ones(k)
        self.in_service_quality = np.zeros(k, np.uint8)
        self._il_out = (np.zeros(k * IL.N_FLAGS, np.int64), np.zeros(k * IL.N_FLAGS, np.int64),
                        np.zeros(n_units, np.int64))
        self.registry = BypassRegistry({il.id: il.max_bypass for il in rules.interlocks})
        self.requests = RequestBook()  # bypass and highly managed alarm requests awaiting another's approval

        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        now_wall = time.time() if now_wall is None else now_wall
        self.analytics = AlarmAnalytics(rules.analytics, now_monotonic, now_wall, compiled.alarm_units)
        self.hidden_report = HiddenReport(rules.analytics.shelved_report_interval, now_monotonic)
        self._clock = (now_monotonic, now_wall)
        self.last_seconds = 0.0
        self.scans = 0
        # until the first scan nothing has been read: listings say NO_VALUE, not GOOD
        self._values, self._read_times, self._read_walls = np.full(size, np.nan), None, None
        self._last_quality = np.full(size, Quality.NO_VALUE, np.uint8)
        self.trips = TripRecorder(compiled.trips, rules.interlocks, self._event_level)
        # highly managed alarms shelved or out of service: alarm index -> (authorization, monotonic end)
        self.managed: dict[int, tuple[managed.AlarmAuthorization, float]] = {}
        self._consequential_expr = arrays.supp_expr[compiled.trips.consequential_slot]

    @property
    def alarm_count(self) -> int:
        return len(self.infos)

    # ---------------------------------------------------------------- the scan

    def evaluate(self, values: np.ndarray, quality: np.ndarray, now_monotonic: float,
                 now_wall: float, read_times: np.ndarray | None = None,
                 read_walls: np.ndarray | None = None) -> list[Event]:
        """One scan over the point table arrays; returns this scan's events in order. `read_times`
        (float64 per row, monotonic seconds: the point table's `updated`) is when each row was read;
        trip events order their first-out causes and stamp their values with it (without it: the scan time).
        `read_walls` (the point table's `gateway_ts`) is the same reads on the wall clock: trip records then
        carry exactly the times the reads' samples carry upstream (without it: converted with this scan's clock)."""
        started = time.perf_counter()
        if values.dtype != np.float64 or quality.dtype != np.uint8 or values.shape[0] != self.size:
            raise TypeError(f"values must be float64[{self.size}] and quality uint8[{self.size}]")
        now, wall = float(now_monotonic), float(now_wall)
        self._clock = (now, wall)
        self._values, self._last_quality = values, quality
        self._read_times, self._read_walls = read_times, read_walls
        reference = self.backend == "reference"
        K = self._kernels
        program, raw, cond = self.program, self.raw, self.cond
        if reference:
            run_programs_reference(values, quality, program, self.expr_out)
        elif program.count:
            K.run_programs(values, quality, program.op, program.arg, program.constants, program.start,
                         self._stack, self.expr_out)
        a, b = self.bounds["limit"]
        (C.limit_conditions_reference if reference else K.limit_conditions)(
            values, quality, *self._limit, cond[a:b], raw[a:b])
        a, b = self.bounds["rate"]
        (C.rate_conditions_reference if reference else K.rate_conditions)(
            values, quality, now, self._rate[0], *self._rate[1:], *self._rate_buffers, cond[a:b], raw[a:b])
        a, b = self.bounds["deviation"]
        (C.deviation_conditions_reference if reference else K.deviation_conditions)(
            values, quality, *self._deviation, cond[a:b], raw[a:b])
        a, b = self.bounds["discrete"]
        (C.discrete_conditions_reference if reference else K.discrete_conditions)(
            values, quality, *self._discrete, cond[a:b], raw[a:b])
        a, b = self.bounds["quality"]
        (C.quality_conditions_reference if reference else K.quality_conditions)(
            quality, *self._quality, cond[a:b], raw[a:b])
        a, b = self.bounds["expression"]
        if b > a:
            np.take(self.expr_out, self._expr_alarm_slots, out=raw[a:b])
        a, b = self.bounds["suppression_state"]
        raw[a:b] = self.expr_out[self._state_slots] == UNKNOWN  # a group's condition undecided: STATE_BAD
        arrays = self.arrays
        if len(self._consequential_expr):
            self.expr_out[self._consequential_expr[self.trips.consequences_active(now)]] = 1
        (isa.update_alarms_reference if reference else K.update_alarms)(
            raw, self.expr_out, now, float(self.rules.analytics.stale_after), *arrays.kernel_args())
        il_args = (values, quality, self.expr_out, now, wall, *self._il_config, self.auth_from, self.auth_until,
                   self.bypassed, self.trip, self.bypass_since, self.bypass_wall, self.bypassed_before, self.flags,
                   self.unit_flag, self.unit_count, self.in_service, self.in_service_quality, *self._il_out)
        trip_events = []
        if self.interlock_ids:
            n_il, n_unit = (IL.update_interlocks_reference if reference else K.update_interlocks)(*il_args)
            trip_events = self.trips.scan(values, quality, read_times, self.expr_out, self.trip, self.bypassed, now,
                                          wall, read_walls)
        else:
            n_il = n_unit = 0
        managed_events = self._end_managed(now, wall) if self.managed else []
        self.last_seconds = time.perf_counter() - started
        self.scans += 1
        return managed_events + self._scan_events(now, wall, n_il, n_unit, trip_events)

    def _scan_events(self, now: float, wall: float, n_il: int, n_unit: int, trip_events: list[Event]) -> list[Event]:
        arrays = self.arrays
        counts = arrays.counts
        gas_events, alarm_events, activations, realarms = [], [], [], []
        for k in range(int(counts[isa.C_TRANSITIONS])):
            i = int(arrays.out_index[k])
            previous = int(arrays.out_prev[k])
            new = int(arrays.state[i])
            event = self._alarm_event(i, previous, new, wall, "")
            info = self.infos[i]
            if new == isa.UNACK:
                if previous == isa.ACKED:
                    realarms.append(info.id)
                else:
                    activations.append((info.id, info.level))
            if info.kind == "gas":
                gas_events.append((gas_order_key(info.gas_level, info.toxic), new != isa.UNACK, event))
            else:
                alarm_events.append(event)
        gas_events.sort(key=lambda item: (item[1], item[0]))
        events = [item[2] for item in gas_events] + alarm_events
        events += self._interlock_events(now, wall, n_il, n_unit)
        events += trip_events
        stale = [(self.infos[int(i)].id, self.infos[int(i)].level)
                 for i in arrays.out_stale[:int(counts[isa.C_STALE])]]
        events += self.analytics.update(now, wall, activations, realarms, stale, int(counts[isa.C_ACTIVE]),
                                        int(counts[isa.C_UNACK]))
        if self.hidden_report.due(now):
            events.append(self.hidden_report.event(wall, self.alarms()))
        return events

    # ---------------------------------------------------------------- events

    def _event_level(self, event: str) -> int:
        """The priority level of an interlock event (`rules.bypass_priorities`, else its default name)."""
        name = self.rules.bypass_priorities.get(event) or DEFAULT_BYPASS_PRIORITIES[event]
        return int(self.rules.priorities.get(name, Priority.HIGH))
    def _quality_of(self, tag: str) -> int | None:
        """The tag's quality as the point table has it (shown next to its value: a held alarm says why)."""
        return int(self._last_quality[self.tag_rows[tag]]) if tag and tag in self.tag_rows else None

    def _value(self, tag: str) -> float | None:
        if not tag or tag not in self.tag_rows:
            return None
        return jsonable(float(self._values[self.tag_rows[tag]]))

    def _alarm_event(self, i: int, previous: int, new: int, wall: float, cause: str) -> Event:
        info = self.infos[i]
        arrays = self.arrays
        value = self._value(info.tag)
        state, was = STATE_NAMES[new], STATE_NAMES[previous]
        quality = self._quality_of(info.tag)
        message = alarm_message(info, value, state, was, cause, quality)
        data = {"alarm": info.id, "kind": info.kind, "state": state, "previous": was,
                "active": bool(arrays.active[i]), "latched": bool(arrays.latch[i]), "priority": info.priority,
                "tag": info.tag, "value": value, "quality": quality,
                "setpoint": jsonable(info.setpoint) if info.setpoint is not None
                else None, "unit": info.unit}
        if info.kind == "limit":
            data["limit"] = info.limit
        if info.kind == "gas":
            data.update(gas=info.gas, gas_type="toxic" if info.toxic else "combustible", level=info.gas_level)
        if info.description:
            data["description"] = info.description
        return Event("gas_alarm" if info.kind == "gas" else "alarm", wall, info.tag or info.id, message,
                     Priority(info.level), data)

    def _interlock_events(self, now: float, wall: float, n_il: int, n_unit: int) -> list[Event]:
        events = []
        out_interlock, out_flag, out_unit = self._il_out
        interlocks = self.rules.interlocks
        for n in range(n_il):
            k, f = int(out_interlock[n]), int(out_flag[n])
            il = interlocks[k]
            raised = bool(self.flags[k, f])
            name = IL.FLAG_EVENTS[f]
            if f == IL.F_BYPASSED:
                event_name = "started" if raised else "ended"
            else:
                event_name = name if raised else f"{name}_cleared"
            message = bypass_message(il.id, name, raised)
            level = self._event_level(name if f != IL.F_BYPASSED else event_name)
            if not raised and f != IL.F_BYPASSED:
                level = int(Priority.INFO)
            start, end = self.auth_from[k], self.auth_until[k]
            episode = self._record_episode(k, f, raised, now, wall)
            authorization = self.registry.current(il.id)
            data = {"interlock": il.id, "event": event_name, "unit": il.unit, "bypassed": bool(self.bypassed[k]),
                    "in_service": bool(self.in_service[k]), "protects": list(il.protects),
                    "authorized_from": jsonable(start), "authorized_until": jsonable(end),
                    "authorization": authorization.id if authorization is not None else None,
                    "bypassed_for": (now - float(self.bypass_since[k])) if self.bypassed[k] else None,
                    "bypassed_total": self._bypassed_total(k, now),
                    "episode": episode.id if episode is not None else None}
            if f == IL.F_BYPASSED and episode is not None:
                data["authorizations"] = list(episode.authorizations)
                if not raised:
                    data.update(duration=episode.duration, bypassed_from=episode.start, bypassed_until=episode.end)
            if f == IL.F_TRIP and il.trip is not None:
                data["trip"] = il.trip.source
                if raised:
                    data["values"] = self.trips.readings(k, self._values, self._last_quality,
                                                        self._read_times, now, wall, self._read_walls)
            events.append(Event("bypass", wall, il.id, message, Priority(level), data))
        for n in range(n_unit):
            u = int(out_unit[n])
            over = bool(self.unit_flag[u])
            name = self.unit_names[u]
            limit = next((x.max_bypassed for x in self.rules.units if x.name == name), None)
            bypassed = [il.id for k, il in enumerate(interlocks) if il.unit == name and self.bypassed[k]]
            message = too_many_message(name, len(bypassed), limit, over)
            level = self._event_level("too_many") if over else int(Priority.INFO)
            events.append(Event("bypass", wall, name, message, Priority(level),
                                {"unit": name, "event": "too_many" if over else "too_many_cleared",
                                 "bypassed": bypassed, "max_bypassed": limit}))
        return events

    def _record_episode(self, k: int, flag: int, raised: bool, now: float, wall: float) -> Any:
        """Open or close the bypass episode in the registry on a bypassed edge; the episode concerned."""
        interlock = self.interlock_ids[k]
        if flag != IL.F_BYPASSED:
            return self.registry.open_episode(interlock)
        if raised:
            return self.registry.episode_started(interlock, float(self.bypass_wall[k]))
        episode = self.registry.episode_ended(interlock, wall, now - float(self.bypass_since[k]))
        self.bypassed_before[k] = self.registry.bypassed_before(interlock)
        return episode

    def _bypassed_total(self, k: int, now: float) -> float:
        """Seconds bypassed under the current authorization, the running episode included."""
        running = now - float(self.bypass_since[k]) if self.bypassed[k] else 0.0
        return float(self.bypassed_before[k]) + running

    # ---------------------------------------------------------------- operator actions

    def act(self, action: str, alarm_id: str, user: str, reason: str = "", *, duration: float | None = None,
            one_shot: bool = False, now_monotonic: float | None = None,
            now_wall: float | None = None, permit: str | None = None, approved_by: str | None = None,
            requested_by: str | None = None) -> list[Event]:
        """ack, shelve (duration in seconds, optional one_shot), unshelve, out_of_service, return_to_service,
        reset. Returns the alarm's state event (if it changed) and the audit event; raises ActionError.
        Shelving a highly managed alarm or taking it out of service needs `permit`, `approved_by` (not the
        requester: `requested_by`, default `user`) and `duration` (`rules.managed`)."""
        if action not in isa.ACTIONS:
            raise ActionError(f"unknown action {action!r}; one of {', '.join(isa.ACTIONS)}")
        if not isinstance(user, str) or not user.strip():
            raise ActionError("every action needs the user who does it")
        if action in ("shelve", "out_of_service") and not (reason or "").strip():
            raise ActionError(f"{action.replace('_', ' ')} needs a reason")
        i = self._alarm(alarm_id)
        now, wall = self._now(now_monotonic, now_wall)
        authorization = None
        if self.infos[i].highly_managed and action in managed.MANAGED_ACTIONS:
            authorization = managed.authorize(alarm_id, action, requested_by=requested_by or user, permit=permit,
                                              approved_by=approved_by, duration=duration,
                                              maximum=self.rules.highly_managed_max, now_wall=wall)
            require_four_eyes(authorization.approved_by, user)
        return self._perform(action, i, user, reason, duration, one_shot, authorization, now, wall)

    def _perform(self, action: str, i: int, user: str, reason: str, duration: float | None, one_shot: bool,
                 authorization: managed.AlarmAuthorization | None, now: float, wall: float,
                 headline: str | None = None) -> list[Event]:
        """Carry out a checked action on alarm `i`: its state event (if the state changed), then its audit
        record headed by `user`."""
        alarm_id = self.infos[i].id
        extra: dict[str, Any] = {}
        if action == "shelve":
            if duration is None:
                raise ActionError("shelving needs a duration")
            previous, new = isa.shelve(self.arrays, i, now, float(duration), self.rules.shelving_max, one_shot)
            extra = {"duration": float(duration), "until": wall + float(duration), "one_shot": bool(one_shot)}
        else:
            previous, new = isa.ACTIONS[action](self.arrays, i, now)
        if authorization is not None:
            self.managed[i] = (authorization, now + authorization.duration)
            extra["authorization"] = authorization.to_dict()
        elif action in ("unshelve", "return_to_service", *managed.MANAGED_ACTIONS):
            self.managed.pop(i, None)
        events = []
        if new != previous:
            events.append(self._alarm_event(i, previous, new, wall, f"{action.replace('_', ' ')} by {user}"))
            if new == isa.UNACK:
                info = self.infos[i]
                events += self.analytics.update(now, wall, [(info.id, info.level)])
        events.insert(0 if not events else 1, audit_event(
            wall, user, action, alarm_id, reason,
            {"previous": STATE_NAMES[previous], "state": STATE_NAMES[new], **extra}, headline))
        return events

    def highly_managed(self, alarm_id: str) -> bool:
        """Whether shelving `alarm_id` or taking it out of service needs an approved request (rules.managed)."""
        return self.infos[self._alarm(alarm_id)].highly_managed

    # ---------------------------------------------------------------- requests and approvals (four eyes)

    def request_bypass(self, interlock: str, *, reason: str, permit: str, requested_by: str, duration: float,
                       measures: str, affected_tags: Iterable[str] = (), window: float,
                       now_wall: float | None = None) -> list[Event]:
        """Ask for a bypass authorization; it comes into force when another account approves the request
        (`approve`) within `window` seconds. Returns the request's audit event."""
        wall = time.time() if now_wall is None else float(now_wall)
        self.registry.check(interlock, reason=reason, permit=permit, requested_by=requested_by, duration=duration,
                            measures=measures)
        request = self.requests.add("bypass", interlock, requested_by=requested_by, reason=reason, permit=permit,
                                    duration=duration, details={"measures": measures,
                                                                "affected_tags": list(affected_tags)},
                                    now=wall, window=window)
        return [self._request_event(request, wall)]

    def request_action(self, action: str, alarm_id: str, *, reason: str, permit: str, requested_by: str,
                       duration: float, one_shot: bool = False, window: float,
                       now_wall: float | None = None) -> list[Event]:
        """Ask to shelve a highly managed alarm (or take it out of service) for `duration`; done when another
        account approves the request within `window` seconds. Returns the request's audit event."""
        wall = time.time() if now_wall is None else float(now_wall)
        if action not in managed.MANAGED_ACTIONS:
            raise ActionError(f"only {' and '.join(managed.MANAGED_ACTIONS)} are requested, not {action!r}")
        if not self.highly_managed(alarm_id):
            raise ActionError(f"{alarm_id} is not a highly managed alarm: {action.replace('_', ' ')} it directly")
        if not (reason or "").strip():
            raise ActionError(f"{action.replace('_', ' ')} needs a reason")
        managed.check_duration(alarm_id, action, duration, self.rules.highly_managed_max)
        if action == "shelve" and duration > self.rules.shelving_max:
            raise ActionError(f"shelving for {isa.format_seconds(duration)} exceeds the maximum of "
                              f"{isa.format_seconds(self.rules.shelving_max)} (rules.shelving.max_duration)")
        request = self.requests.add(action, alarm_id, requested_by=requested_by, reason=reason, permit=permit,
                                    duration=duration, details={"one_shot": bool(one_shot)}, now=wall, window=window)
        return [self._request_event(request, wall)]

    def _request_event(self, request: Any, wall: float) -> Event:
        return audit_event(wall, request.requested_by, f"{request.kind}_request", request.target, request.reason,
                           {"request": request.to_dict()},
                           f"requests {request.describe()} (request {request.id}, permit {request.permit}, "
                           f"expires unless approved by another account)")

    def approve(self, request_id: int, *, approved_by: str, now_monotonic: float | None = None,
                now_wall: float | None = None) -> list[Event]:
        """Approve another account's request: the bypass authorization comes into force, or the highly
        managed alarm is shelved (taken out of service). Raises ActionError for an unknown, expired or
        already approved request, and for an approval by the account that asked."""
        now, wall = self._now(now_monotonic, now_wall)
        request = self.requests.approvable(request_id, approved_by, wall)
        headline = (f"approves request {request.id} of {request.requested_by}: {request.describe()}, "
                    f"permit {request.permit}")
        if request.kind == "bypass":
            _, events = self.registry.authorize(
                request.target, reason=request.reason, permit=request.permit, approved_by=approved_by,
                requested_by=request.requested_by, duration=request.duration, measures=request.details["measures"],
                affected_tags=request.details["affected_tags"], now=wall, request=request.id, user=approved_by,
                headline=headline)
            self._sync_authorizations()
        else:
            i = self._alarm(request.target)
            authorization = managed.AlarmAuthorization(request.target, request.kind, request.permit, approved_by,
                                                       request.requested_by, wall, request.duration)
            events = self._perform(request.kind, i, approved_by, request.reason, request.duration,
                                   bool(request.details.get("one_shot")), authorization, now, wall, headline)
        done = self.requests.approved(request_id, approved_by, wall).to_dict()
        return [dataclasses.replace(event, data={**event.data, "request": done}) if event.kind == "audit" else event
                for event in events]

    def request_list(self, include_closed: bool = False, now_wall: float | None = None) -> list[dict[str, Any]]:
        return self.requests.list(time.time() if now_wall is None else now_wall, include_closed)

    def _end_managed(self, now: float, wall: float) -> list[Event]:
        """Authorizations end with their shelf or out-of-service period; an out-of-service period of a highly
        managed alarm ends when its authorization runs out: back in service, audited as the gateway's."""
        events = []
        for i, (authorization, until) in list(self.managed.items()):
            arrays = self.arrays
            if authorization.action == "shelve" and math.isnan(float(arrays.shelved_until[i])):
                del self.managed[i]
            elif authorization.action == "out_of_service" and not arrays.oos[i]:
                del self.managed[i]
            elif authorization.action == "out_of_service" and now >= until:
                del self.managed[i]
                previous, new = isa.return_to_service(arrays, i, now)
                reason = f"authorization {authorization.permit} for out of service ran out"
                if new != previous:
                    events.append(self._alarm_event(i, previous, new, wall, reason))
                events.append(audit_event(wall, "gatewayd", "return_to_service", authorization.alarm, reason,
                                          {"previous": STATE_NAMES[previous], "state": STATE_NAMES[new],
                                           "authorization": authorization.to_dict()}))
        return events

    def _alarm(self, alarm_id: str) -> int:
        try:
            return self.index[alarm_id]
        except KeyError:
            close = difflib.get_close_matches(alarm_id, list(self.index), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ActionError(f"no alarm {alarm_id!r}{hint}") from None

    def _now(self, now_monotonic: float | None, now_wall: float | None) -> tuple[float, float]:
        return (time.monotonic() if now_monotonic is None else float(now_monotonic),
                time.time() if now_wall is None else float(now_wall))

    # ---------------------------------------------------------------- bypass authorizations

    def bypass_authorize(self, interlock: str, *, reason: str, permit: str, approved_by: str, requested_by: str,
                         duration: float, measures: str, affected_tags: Iterable[str] = (),
                         now_wall: float | None = None) -> list[Event]:
        wall = time.time() if now_wall is None else float(now_wall)
        _, events = self.registry.authorize(interlock, reason=reason, permit=permit, approved_by=approved_by,
                                            requested_by=requested_by, duration=duration, measures=measures,
                                            affected_tags=affected_tags, now=wall)
        self._sync_authorizations()
        return events

    def bypass_revoke(self, authorization_id: int, *, user: str, reason: str,
                      now_wall: float | None = None) -> list[Event]:
        wall = time.time() if now_wall is None else float(now_wall)
        _, events = self.registry.revoke(authorization_id, user=user, reason=reason, now=wall)
        self._sync_authorizations()
        return events

    def bypass_list(self, include_closed: bool = False, now_wall: float | None = None) -> list[dict[str, Any]]:
        return self.registry.list(time.time() if now_wall is None else now_wall, include_closed)

    def _sync_authorizations(self) -> None:
        for k, interlock in enumerate(self.interlock_ids):
            self.auth_from[k], self.auth_until[k] = self.registry.window(interlock)
            self.bypassed_before[k] = self.registry.bypassed_before(interlock)

    # ---------------------------------------------------------------- listings and metrics

    def _to_wall(self, t: float) -> float:
        now, wall = self._clock
        return wall - (now - t)

    def alarms(self, include_normal: bool = False) -> list[dict[str, Any]]:
        """One dict per alarm (not in NORM unless asked), gas alarms first in GB/T 50493 order."""
        arrays = self.arrays
        if include_normal:
            indices = range(len(self.infos))
        else:
            indices = np.nonzero((arrays.state != isa.NORM) | (arrays.latch != 0))[0].tolist()
        listing = []
        for i in indices:
            info = self.infos[i]
            shelved = float(arrays.shelved_until[i])
            listing.append({
                "id": info.id, "kind": info.kind, "tag": info.tag, "priority": info.priority,
                "state": STATE_NAMES[int(arrays.state[i])], "active": bool(arrays.active[i]),
                "latched": bool(arrays.latch[i]), "since": self._to_wall(float(arrays.since[i])),
                "shelved_until": None if math.isnan(shelved) else self._to_wall(shelved),
                "hidden_occurrences": int(arrays.hidden[i]),
                "class": "highly_managed" if info.highly_managed else "standard",
                "authorization": self.managed[i][0].to_dict() if i in self.managed else None,
                "value": self._value(info.tag), "quality": self._quality_of(info.tag),
                "setpoint": jsonable(info.setpoint) if info.setpoint is not None
                else None, "unit": info.unit, "description": info.description,
                **({"gas_level": info.gas_level, "gas_type": "toxic" if info.toxic else "combustible"}
                   if info.kind == "gas" else {}),
            })
        gas = sorted((item for item in listing if item["kind"] == "gas"),
                     key=lambda item: (not item["active"],
                                       gas_order_key(item["gas_level"], item["gas_type"] == "toxic")))
        return gas + [item for item in listing if item["kind"] != "gas"]

    def interlocks(self) -> list[dict[str, Any]]:
        now, wall = self._clock
        listing = []
        for k, il in enumerate(self.rules.interlocks):
            listing.append({
                "id": il.id, "unit": il.unit, "description": il.description,
                "status": "bypassed" if self.bypassed[k] else "in_service",
                "in_service": float(self.in_service[k]), "quality": int(self.in_service_quality[k]),
                "bypassed_since": float(self.bypass_wall[k]) if self.bypassed[k] else None,
                "bypassed_total": self._bypassed_total(k, now),
                "trip_condition": bool(self.trip[k]),
                "flags": [IL.FLAG_EVENTS[f] for f in range(IL.N_FLAGS) if self.flags[k, f] and f != IL.F_BYPASSED],
                "authorized_from": jsonable(self.auth_from[k]), "authorized_until": jsonable(self.auth_until[k]),
            })
        return listing

    def counts(self) -> dict[str, int]:
        """How many alarms there are and how many are in each ISA-18.2 condition, as of the last scan."""
        counts = self.arrays.counts
        return {"alarms": len(self.infos), "active": int(counts[isa.C_ACTIVE]),
                "unacknowledged": int(counts[isa.C_UNACK]), "shelved": int(counts[isa.C_SHELVED]),
                "suppressed": int(counts[isa.C_SUPPRESSED]), "out_of_service": int(counts[isa.C_OOS])}

    def state_counts(self) -> list[tuple[str, str, int]]:
        """(priority, ISA-18.2 state, count) of the alarms not in NORM, sorted; only those are visited."""
        states = self.arrays.state
        counts = Counter((self.infos[i].priority, STATE_NAMES[int(states[i])])
                         for i in (states != isa.NORM).nonzero()[0].tolist())
        return [(priority, state, count) for (priority, state), count in sorted(counts.items())]

    def status(self) -> dict[str, Any]:
        """The operating view's summary, so that callers need not read the engine's arrays: alarm counts,
        alarms outside NORM by priority and state, the priority levels, and the bypassed interlocks."""
        return {"counts": self.counts(), "states": self.state_counts(), "priorities": dict(self.rules.priorities),
                "interlocks": len(self.interlock_ids),
                "bypassed": [item for item in self.interlocks() if item["status"] == "bypassed"]}

    def metrics(self) -> dict[str, Any]:
        now, wall = self._clock
        return {**self.counts(), "expressions": self.program.count, "interlocks": len(self.interlock_ids),
                "bypassed": int(self.bypassed.sum()), "rules_seconds": self.last_seconds, "scans": self.scans,
                "analytics": self.analytics.metrics(now, wall)}

    # ---------------------------------------------------------------- persistence (rules.engine_state)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state that must survive a restart: alarm states, shelves, out of service, latches,
        interlock bypass state and flags, bypass authorizations. Times are stored on the wall clock."""
        return engine_state.save(self, self._to_wall, self._clock[1])

    def restore(self, data: Mapping[str, Any], now_monotonic: float | None = None,
                now_wall: float | None = None) -> list[str]:
        """Load a `state_dict`; ids no longer configured are skipped and named in the returned notes."""
        note = engine_state.version_note(data)
        if note is not None:
            return [note]
        now, wall = self._now(now_monotonic, now_wall)
        self._clock = (now, wall)
        notes = engine_state.restore(self, data, now, wall)
        self._sync_authorizations()
        return notes
