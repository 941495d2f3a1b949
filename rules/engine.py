"""The rule engine: one object the daemon builds from the rules config and calls every scan.

    engine = RuleEngine.build(config.rules, table.rows, len(table), tag_alarms=..., tag_info=...)
    events = engine.evaluate(table.value, table.quality, time.monotonic(), time.time())
    events = engine.act("ack", "PT101.HH", user="alice", reason="seen")
    engine.alarms()                      # for `gatewayd alarms`
    engine.in_service                    # float64 per interlock (1 in service, 0 bypassed), with
    engine.in_service_quality            # its quality (bad while a status tag is bad)
    saved = engine.state_dict(); engine.restore(saved)   # across a restart

Every alarm has an id: `TAG.HH` / `TAG.H` / `TAG.L` / `TAG.LL` for analog limits, `TAG.GAS1` / `TAG.GAS2`
for gas channels, and its own `id` for the rules under `rules.alarms`. The hot path is numba kernels
over preallocated arrays (`backend="numba"`); `backend="reference"` runs the plain-Python twins over
the same arrays, for tests and benchmarks.

Events are `gatewayd.types.Event` with JSON-ready data; kinds: `alarm`, `gas_alarm`, `bypass`,
`audit`, `analytics`. Within a scan: gas alarms first (level 2 before level 1, toxic before
combustible), then other alarms in configuration order, then bypass events, then analytics.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from gatewayd.types import Event, Priority
from rules import conditions as C
from rules import interlocks as IL
from rules import isa
from rules.analytics import AlarmAnalytics
from rules.bypass import BypassRegistry, audit_event
from rules.expr import Expression, parse_expression
from rules.gas import UNITS as GAS_UNITS
from rules.gas import gas_order_key
from rules.isa import STATE_NAMES, ActionError, AlarmArrays
from rules.model import (
    AlarmBehaviour,
    ExpressionSpec,
    RulesConfig,
    TagAlarmConfig,
    jsonable,
)
from rules.program import make_stack, pack, run_programs, run_programs_reference

STATE_VERSION = 1
_DIRECTIONS = {"both": C.BOTH, "rise": C.RISE, "high": C.RISE, "fall": C.FALL, "low": C.FALL}
_QUALITY_MODES = {"bad": C.QUALITY_BAD, "bad_or_stale": C.QUALITY_BAD_OR_STALE, "not_good": C.QUALITY_NOT_GOOD}
_SEGMENTS = ("limit", "rate", "deviation", "discrete", "quality", "expression")


class AlarmInfo(NamedTuple):
    """What the engine knows about one alarm beyond its arrays: for events and listings. (A named
    tuple rather than a frozen dataclass: 100,000 of them are built at start-up.)"""

    id: str
    kind: str  # limit, gas, rate, deviation, discrete, quality, expression
    tag: str  # the tag it watches ("" for expressions)
    priority: str
    level: int  # gatewayd.types.Priority value
    description: str = ""
    limit: str = ""  # HH/H/L/LL, or "1"/"2" for gas levels
    setpoint: float | None = None
    unit: str = ""
    gas: str = ""
    toxic: bool = False
    gas_level: int = 0
    when: str = ""


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
        self = object.__new__(cls)
        self.rules = rules = rules or RulesConfig()
        self.backend = backend
        self.size = size
        self.tag_rows = dict(tag_rows)
        units = {name: getattr(info, "unit", "") or "" for name, info in (tag_info or {}).items()}
        def level(name: str) -> int:
            return int(rules.priorities[name])

        infos: list[AlarmInfo] = []
        behaviours: list[AlarmBehaviour] = []

        limit_rows, limit_sp, limit_db, limit_high = [], [], [], []
        for config in tag_alarms:
            for limit in config.limits:
                infos.append(AlarmInfo(f"{config.tag}.{limit.level}", "limit", config.tag, limit.behaviour.priority,
                                       level(limit.behaviour.priority), limit.behaviour.description, limit.level,
                                       limit.setpoint, units.get(config.tag, "")))
                behaviours.append(limit.behaviour)
                limit_rows.append(self.tag_rows[config.tag])
                limit_sp.append(limit.setpoint)
                limit_db.append(limit.deadband)
                limit_high.append(limit.high)
        for channel in rules.gas:
            for gas_level, setpoint, behaviour in ((2, channel.level2, channel.behaviour2),
                                                   (1, channel.level1, channel.behaviour1)):
                infos.append(AlarmInfo(f"{channel.tag}.GAS{gas_level}", "gas", channel.tag, behaviour.priority,
                                       level(behaviour.priority), behaviour.description, str(gas_level), setpoint,
                                       GAS_UNITS[channel.type], channel.gas, channel.toxic, gas_level))
                behaviours.append(behaviour)
                limit_rows.append(self.tag_rows[channel.tag])
                limit_sp.append(setpoint)
                limit_db.append(channel.deadband)
                limit_high.append(True)
        self._limit = (np.array(limit_rows, np.int64), np.array(limit_sp, np.float64),
                       np.array(limit_db, np.float64), np.array(limit_high, np.bool_))
        bounds = {"limit": (0, len(infos))}

        by_kind: dict[str, list] = {name: [] for name in _SEGMENTS[1:]}
        for rule in rules.alarms:
            by_kind[rule.kind].append(rule)
        expressions: list[Expression] = []
        for kind in _SEGMENTS[1:]:
            first = len(infos)
            for rule in by_kind[kind]:
                spec = rule.spec
                tag = getattr(spec, "tag", "")
                infos.append(AlarmInfo(rule.id, kind, tag, rule.behaviour.priority, level(rule.behaviour.priority),
                                       rule.behaviour.description, unit=units.get(tag, ""),
                                       setpoint=getattr(spec, "limit", None),
                                       when=spec.when.source if isinstance(spec, ExpressionSpec) else ""))
                behaviours.append(rule.behaviour)
                if isinstance(spec, ExpressionSpec):
                    expressions.append(spec.when)
            bounds[kind] = (first, len(infos))
        self.bounds = bounds
        self.infos = tuple(infos)
        self.index = {info.id: i for i, info in enumerate(infos)}
        if len(self.index) != len(infos):
            seen: set[str] = set()
            duplicates = sorted({info.id for info in infos if info.id in seen or seen.add(info.id)})
            raise ValueError(f"duplicate alarm ids: {', '.join(duplicates)}")
        n = len(infos)

        rate_rules, dev_rules = by_kind["rate"], by_kind["deviation"]
        disc_rules, qual_rules = by_kind["discrete"], by_kind["quality"]
        rows = self.tag_rows
        self._rate = (np.array([rows[r.spec.tag] for r in rate_rules], np.int64),
                      np.array([60.0 if r.spec.per == 60.0 else 1.0 for r in rate_rules], np.float64),
                      np.array([r.spec.window for r in rate_rules], np.float64),
                      np.array([_DIRECTIONS[r.spec.direction] for r in rate_rules], np.int64),
                      np.array([r.spec.limit for r in rate_rules], np.float64),
                      np.array([r.spec.deadband for r in rate_rules], np.float64))
        self._rate_buffers = (np.zeros((len(rate_rules), C.RATE_SLOTS)), np.zeros((len(rate_rules), C.RATE_SLOTS)),
                              np.zeros(len(rate_rules), np.int64), np.zeros(len(rate_rules), np.int64))
        self._deviation = (np.array([rows[r.spec.tag] for r in dev_rules], np.int64),
                           np.array([rows[r.spec.reference_tag] if r.spec.reference_tag else -1 for r in dev_rules],
                                    np.int64),
                           np.array([r.spec.setpoint if r.spec.setpoint is not None else 0.0 for r in dev_rules],
                                    np.float64),
                           np.array([_DIRECTIONS[r.spec.direction] for r in dev_rules], np.int64),
                           np.array([r.spec.limit for r in dev_rules], np.float64),
                           np.array([r.spec.deadband for r in dev_rules], np.float64))
        state_start = np.zeros(len(disc_rules) + 1, np.int64)
        states: list[float] = []
        for k, rule in enumerate(disc_rules):
            states.extend(rule.spec.states)
            state_start[k + 1] = len(states)
        self._discrete = (np.array([rows[r.spec.tag] for r in disc_rules], np.int64), state_start,
                          np.array(states or [0.0], np.float64))
        self._quality = (np.array([rows[r.spec.tag] for r in qual_rules], np.int64),
                         np.array([_QUALITY_MODES[r.spec.trigger] for r in qual_rules], np.int64))

        # suppression by design: one expression slot per distinct condition, after the alarm expressions
        known = set(self.tag_rows).__contains__
        conditions_of: dict[int, list[Expression]] = {}
        for i, behaviour in enumerate(behaviours):
            if behaviour.suppressed_when is not None:
                conditions_of.setdefault(i, []).append(behaviour.suppressed_when)
        for group in rules.suppressions:
            matched = [i for i, info in enumerate(infos) if any(fnmatch.fnmatchcase(info.id, p) for p in group.alarms)]
            if not matched:
                raise ValueError(f"suppression {group.id!r}: no alarm id matches {', '.join(group.alarms)}")
            for i in matched:
                conditions_of.setdefault(i, []).append(group.when)
        supp_sources: dict[str, int] = {}
        supp_expressions: list[Expression] = []
        alarm_supp = np.full(n, -1, np.int64)
        for i, found in sorted(conditions_of.items()):
            unique = list(dict.fromkeys(expression.source for expression in found))
            source = unique[0] if len(unique) == 1 else " or ".join(f"({s})" for s in unique)
            if source not in supp_sources:
                expression = found[0] if len(unique) == 1 else parse_expression(source, known)
                supp_sources[source] = len(supp_expressions)
                supp_expressions.append(expression)
            alarm_supp[i] = supp_sources[source]
        self.suppression_sources = tuple(supp_sources)

        interlocks = rules.interlocks
        trip_expressions = [il.trip for il in interlocks if il.trip is not None]
        n_alarm_expr = len(expressions)
        self.program = pack(expressions + supp_expressions + trip_expressions, self.tag_rows)
        self._stack = make_stack(self.program)
        self.expr_out = np.zeros(max(self.program.count, 1), np.uint8)
        self._expr_alarm_slots = np.arange(n_alarm_expr, dtype=np.int64)

        arrays = AlarmArrays.allocate(n, len(supp_expressions))
        arrays.on_delay[:] = [b.on_delay for b in behaviours]
        arrays.off_delay[:] = [b.off_delay for b in behaviours]
        arrays.latching[:] = [b.latching for b in behaviours]
        arrays.realarm[:] = [b.realarm for b in behaviours]
        arrays.supp_slot[:] = alarm_supp
        arrays.supp_expr[:] = np.arange(n_alarm_expr, n_alarm_expr + len(supp_expressions))
        self.arrays = arrays
        self.cond = np.zeros(n, np.uint8)
        self.raw = np.zeros(n, np.uint8)

        # interlocks
        self.interlock_ids = tuple(il.id for il in interlocks)
        self.interlock_index = {il.id: k for k, il in enumerate(interlocks)}
        unit_names = [u.name for u in rules.units]
        unit_index = {name: u for u, name in enumerate(unit_names)}
        for il in interlocks:
            if il.unit not in unit_index:
                unit_index[il.unit] = len(unit_names)
                unit_names.append(il.unit)
        self.unit_names = tuple(unit_names)
        unit_max = {u.name: u.max_bypassed for u in rules.units}
        status_start, status_rows, status_invert = [0], [], []
        trip_slot, slot = [], n_alarm_expr + len(supp_expressions)
        for il in interlocks:
            for tag in il.bypass_tags:
                status_rows.append(rows[tag])
                status_invert.append(0)
            for tag in il.in_service_tags:
                status_rows.append(rows[tag])
                status_invert.append(1)
            status_start.append(len(status_rows))
            trip_slot.append(slot if il.trip is not None else -1)
            slot += il.trip is not None
        k = len(interlocks)
        self._il_config = (np.array(status_start, np.int64), np.array(status_rows, np.int64),
                           np.array(status_invert, np.uint8), np.array(trip_slot, np.int64),
                           np.array([unit_index[il.unit] for il in interlocks], np.int64),
                           np.array([il.max_bypass for il in interlocks], np.float64),
                           np.array([unit_max.get(name, 1 << 30) for name in unit_names], np.int64))
        self.auth_from = np.full(k, np.nan)
        self.auth_until = np.full(k, np.nan)
        self.bypassed = np.zeros(k, np.uint8)
        self.trip = np.zeros(k, np.uint8)
        self.bypass_since = np.zeros(k)
        self.flags = np.zeros((k, IL.N_FLAGS), np.uint8)
        self.unit_flag = np.zeros(len(unit_names), np.uint8)
        self.unit_count = np.zeros(len(unit_names), np.int64)
        self.in_service = np.ones(k)
        self.in_service_quality = np.zeros(k, np.uint8)
        self._il_out = (np.zeros(k * IL.N_FLAGS, np.int64), np.zeros(k * IL.N_FLAGS, np.int64),
                        np.zeros(len(unit_names), np.int64))
        self.registry = BypassRegistry({il.id: il.max_bypass for il in interlocks})

        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        now_wall = time.time() if now_wall is None else now_wall
        self.analytics = AlarmAnalytics(rules.analytics, now_monotonic, now_wall)
        self._clock = (now_monotonic, now_wall)
        self._gas_alarms = np.array([info.kind == "gas" for info in infos], np.bool_)
        self.last_seconds = 0.0
        self.scans = 0
        self._values = np.full(size, np.nan)
        return self

    @property
    def alarm_count(self) -> int:
        return len(self.infos)

    # ---------------------------------------------------------------- the scan

    def evaluate(self, values: np.ndarray, quality: np.ndarray, now_monotonic: float,
                 now_wall: float) -> list[Event]:
        """One scan over the point table arrays; returns this scan's events in order."""
        started = time.perf_counter()
        if values.dtype != np.float64 or quality.dtype != np.uint8 or values.shape[0] != self.size:
            raise TypeError(f"values must be float64[{self.size}] and quality uint8[{self.size}]")
        now, wall = float(now_monotonic), float(now_wall)
        self._clock = (now, wall)
        self._values = values
        reference = self.backend == "reference"
        program, raw, cond = self.program, self.raw, self.cond
        if reference:
            run_programs_reference(values, quality, program, self.expr_out)
        elif program.count:
            run_programs(values, quality, program.op, program.arg, program.constants, program.start,
                         program.dep_start, program.dep_rows, self._stack, self.expr_out)
        a, b = self.bounds["limit"]
        (C.limit_conditions_reference if reference else C.limit_conditions)(
            values, quality, *self._limit, cond[a:b], raw[a:b])
        a, b = self.bounds["rate"]
        (C.rate_conditions_reference if reference else C.rate_conditions)(
            values, quality, now, self._rate[0], *self._rate[1:], *self._rate_buffers, cond[a:b], raw[a:b])
        a, b = self.bounds["deviation"]
        (C.deviation_conditions_reference if reference else C.deviation_conditions)(
            values, quality, *self._deviation, cond[a:b], raw[a:b])
        a, b = self.bounds["discrete"]
        (C.discrete_conditions_reference if reference else C.discrete_conditions)(
            values, quality, *self._discrete, cond[a:b], raw[a:b])
        a, b = self.bounds["quality"]
        (C.quality_conditions_reference if reference else C.quality_conditions)(
            quality, *self._quality, cond[a:b], raw[a:b])
        a, b = self.bounds["expression"]
        if b > a:
            np.take(self.expr_out, self._expr_alarm_slots, out=raw[a:b])
        arrays = self.arrays
        (isa.update_alarms_reference if reference else isa.update_alarms)(
            raw, self.expr_out, now, float(self.rules.analytics.stale_after), *arrays.kernel_args())
        il_args = (values, quality, self.expr_out, now, wall, *self._il_config, self.auth_from, self.auth_until,
                   self.bypassed, self.trip, self.bypass_since, self.flags, self.unit_flag, self.unit_count,
                   self.in_service, self.in_service_quality, *self._il_out)
        if self.interlock_ids:
            n_il, n_unit = (IL.update_interlocks_reference if reference else IL.update_interlocks)(*il_args)
        else:
            n_il = n_unit = 0
        self.last_seconds = time.perf_counter() - started
        self.scans += 1
        return self._scan_events(now, wall, n_il, n_unit)

    def _scan_events(self, now: float, wall: float, n_il: int, n_unit: int) -> list[Event]:
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
        stale = [(self.infos[int(i)].id, self.infos[int(i)].level)
                 for i in arrays.out_stale[:int(counts[isa.C_STALE])]]
        events += self.analytics.update(now, wall, activations, realarms, stale, int(counts[isa.C_ACTIVE]),
                                        int(counts[isa.C_UNACK]))
        return events

    # ---------------------------------------------------------------- events

    def _value(self, tag: str) -> float | None:
        if not tag or tag not in self.tag_rows:
            return None
        return jsonable(float(self._values[self.tag_rows[tag]]))

    def _alarm_event(self, i: int, previous: int, new: int, wall: float, cause: str) -> Event:
        info = self.infos[i]
        arrays = self.arrays
        value = self._value(info.tag)
        state, was = STATE_NAMES[new], STATE_NAMES[previous]
        detail = ""
        if info.kind == "limit":
            detail = f": {info.tag} {_fmt(value)}{_unit(info.unit)}, {info.limit} limit {info.setpoint:g}"
        elif info.kind == "gas":
            detail = (f": {info.gas or info.tag} {_fmt(value)} {info.unit}, level {info.gas_level} "
                      f"setpoint {info.setpoint:g}")
        elif info.kind == "expression":
            detail = f": {info.when}"
        elif info.tag:
            detail = f": {info.tag} {_fmt(value)}{_unit(info.unit)}"
        if cause:
            detail += f" ({cause})"
        message = f"{info.id} {state} (was {was}){detail}"
        data = {"alarm": info.id, "kind": info.kind, "state": state, "previous": was,
                "active": bool(arrays.active[i]), "latched": bool(arrays.latch[i]), "priority": info.priority,
                "tag": info.tag, "value": value, "setpoint": jsonable(info.setpoint) if info.setpoint is not None
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
        priorities = self.rules.bypass_priorities
        interlocks = self.rules.interlocks
        for n in range(n_il):
            k, f = int(out_interlock[n]), int(out_flag[n])
            il = interlocks[k]
            raised = bool(self.flags[k, f])
            name = IL.FLAG_EVENTS[f]
            if f == IL.F_BYPASSED:
                event_name = "started" if raised else "ended"
                message = f"interlock {il.id} {'bypassed' if raised else 'restored to service'}"
            else:
                event_name = name if raised else f"{name}_cleared"
                message = f"interlock {il.id}: " + _BYPASS_MESSAGES[name][0 if raised else 1]
            level = self.rules.priorities[priorities[name if f != IL.F_BYPASSED else event_name]]
            if not raised and f != IL.F_BYPASSED:
                level = int(Priority.INFO)
            start, end = self.auth_from[k], self.auth_until[k]
            data = {"interlock": il.id, "event": event_name, "unit": il.unit, "bypassed": bool(self.bypassed[k]),
                    "in_service": bool(self.in_service[k]), "protects": list(il.protects),
                    "authorized_from": jsonable(start), "authorized_until": jsonable(end),
                    "bypassed_for": (now - float(self.bypass_since[k])) if self.bypassed[k] else None}
            if f == IL.F_TRIP and il.trip is not None:
                data["trip"] = il.trip.source
            events.append(Event("bypass", wall, il.id, message, Priority(level), data))
        for n in range(n_unit):
            u = int(out_unit[n])
            over = bool(self.unit_flag[u])
            name = self.unit_names[u]
            limit = next((x.max_bypassed for x in self.rules.units if x.name == name), None)
            bypassed = [il.id for k, il in enumerate(interlocks) if il.unit == name and self.bypassed[k]]
            message = (f"unit {name}: {len(bypassed)} interlocks bypassed at once, more than the {limit} allowed"
                       if over else f"unit {name}: bypassed interlocks back within the limit of {limit}")
            level = self.rules.priorities[priorities["too_many"]] if over else int(Priority.INFO)
            events.append(Event("bypass", wall, name, message, Priority(level),
                                {"unit": name, "event": "too_many" if over else "too_many_cleared",
                                 "bypassed": bypassed, "max_bypassed": limit}))
        return events

    # ---------------------------------------------------------------- operator actions

    def act(self, action: str, alarm_id: str, user: str, reason: str = "", *, duration: float | None = None,
            one_shot: bool = False, now_monotonic: float | None = None,
            now_wall: float | None = None) -> list[Event]:
        """ack, shelve (duration in seconds, optional one_shot), unshelve, out_of_service, return_to_service,
        reset. Returns the alarm's state event (if it changed) and the audit event; raises ActionError."""
        if action not in isa.ACTIONS:
            raise ActionError(f"unknown action {action!r}; one of {', '.join(isa.ACTIONS)}")
        if not isinstance(user, str) or not user.strip():
            raise ActionError("every action needs the user who does it")
        if action in ("shelve", "out_of_service") and not (reason or "").strip():
            raise ActionError(f"{action.replace('_', ' ')} needs a reason")
        i = self._alarm(alarm_id)
        now, wall = self._now(now_monotonic, now_wall)
        extra: dict[str, Any] = {}
        if action == "shelve":
            if duration is None:
                raise ActionError("shelving needs a duration")
            previous, new = isa.shelve(self.arrays, i, now, float(duration), self.rules.shelving_max, one_shot)
            extra = {"duration": float(duration), "until": wall + float(duration), "one_shot": bool(one_shot)}
        else:
            previous, new = isa.ACTIONS[action](self.arrays, i, now)
        events = []
        if new != previous:
            events.append(self._alarm_event(i, previous, new, wall, f"{action.replace('_', ' ')} by {user}"))
            if new == isa.UNACK:
                info = self.infos[i]
                events += self.analytics.update(now, wall, [(info.id, info.level)])
        events.insert(0 if not events else 1, audit_event(
            wall, user, action, alarm_id, reason,
            {"previous": STATE_NAMES[previous], "state": STATE_NAMES[new], **extra}))
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
                "value": self._value(info.tag), "setpoint": jsonable(info.setpoint) if info.setpoint is not None
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
                "bypassed_since": self._to_wall(float(self.bypass_since[k])) if self.bypassed[k] else None,
                "trip_condition": bool(self.trip[k]),
                "flags": [IL.FLAG_EVENTS[f] for f in range(IL.N_FLAGS) if self.flags[k, f] and f != IL.F_BYPASSED],
                "authorized_from": jsonable(self.auth_from[k]), "authorized_until": jsonable(self.auth_until[k]),
            })
        return listing

    def metrics(self) -> dict[str, Any]:
        now, wall = self._clock
        counts = self.arrays.counts
        return {"alarms": len(self.infos), "expressions": self.program.count, "interlocks": len(self.interlock_ids),
                "active": int(counts[isa.C_ACTIVE]), "unacknowledged": int(counts[isa.C_UNACK]),
                "shelved": int(counts[isa.C_SHELVED]), "suppressed": int(counts[isa.C_SUPPRESSED]),
                "out_of_service": int(counts[isa.C_OOS]), "bypassed": int(self.bypassed.sum()),
                "rules_seconds": self.last_seconds, "scans": self.scans,
                "analytics": self.analytics.metrics(now, wall)}

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state that must survive a restart: alarm states, shelves, out of service, latches,
        interlock bypass state and flags, bypass authorizations. Times are stored on the wall clock."""
        arrays = self.arrays
        interesting = np.nonzero((arrays.state != isa.NORM) | (arrays.active != 0) | (arrays.latch != 0)
                                 | (arrays.oos != 0) | (self.cond != 0))[0]
        alarms = {}
        for i in interesting.tolist():
            shelved = float(arrays.shelved_until[i])
            alarms[self.infos[i].id] = {
                "state": STATE_NAMES[int(arrays.state[i])], "active": int(arrays.active[i]),
                "cond": int(self.cond[i]), "latch": int(arrays.latch[i]), "oos": int(arrays.oos[i]),
                "since": self._to_wall(float(arrays.since[i])),
                "active_since": self._to_wall(float(arrays.active_since[i])), "stale": int(arrays.stale[i]),
                "shelved_until": None if math.isnan(shelved) else self._to_wall(shelved),
                "one_shot": int(arrays.oneshot[i]),
            }
        interlocks = {}
        for k, interlock in enumerate(self.interlock_ids):
            interlocks[interlock] = {"bypassed": int(self.bypassed[k]), "trip": int(self.trip[k]),
                                     "since": self._to_wall(float(self.bypass_since[k])),
                                     "flags": [int(x) for x in self.flags[k]]}
        return {"version": STATE_VERSION, "saved_at": self._clock[1], "alarms": alarms,
                "suppression": {source: int(self.arrays.supp[g]) for g, source in enumerate(self.suppression_sources)},
                "interlocks": interlocks,
                "units": {name: int(self.unit_flag[u]) for u, name in enumerate(self.unit_names)},
                "bypass": self.registry.to_dict()}

    def restore(self, data: Mapping[str, Any], now_monotonic: float | None = None,
                now_wall: float | None = None) -> list[str]:
        """Load a `state_dict`; ids no longer configured are skipped and named in the returned notes."""
        if data.get("version") != STATE_VERSION:
            return [f"state version {data.get('version')!r} not understood; starting from NORM"]
        now, wall = self._now(now_monotonic, now_wall)
        self._clock = (now, wall)
        def to_mono(t: float) -> float:
            return now - (wall - t)
        notes = []
        arrays = self.arrays
        names = {name: code for code, name in enumerate(STATE_NAMES)}
        for alarm_id, saved in data.get("alarms", {}).items():
            i = self.index.get(alarm_id)
            if i is None:
                notes.append(f"alarm {alarm_id} is no longer configured; its state was dropped")
                continue
            arrays.state[i] = names[saved["state"]]
            arrays.active[i], self.cond[i] = saved["active"], saved["cond"]
            arrays.latch[i], arrays.oos[i], arrays.stale[i] = saved["latch"], saved["oos"], saved["stale"]
            arrays.since[i], arrays.active_since[i] = to_mono(saved["since"]), to_mono(saved["active_since"])
            shelved = saved["shelved_until"]
            arrays.shelved_until[i] = math.nan if shelved is None else to_mono(shelved)
            arrays.oneshot[i] = saved["one_shot"]
        for g, source in enumerate(self.suppression_sources):
            arrays.supp[g] = data.get("suppression", {}).get(source, 0)
        for interlock, saved in data.get("interlocks", {}).items():
            k = self.interlock_index.get(interlock)
            if k is None:
                notes.append(f"interlock {interlock} is no longer configured; its state was dropped")
                continue
            self.bypassed[k], self.trip[k] = saved["bypassed"], saved["trip"]
            self.bypass_since[k] = to_mono(saved["since"])
            self.flags[k] = saved["flags"]
            self.in_service[k] = 0.0 if saved["bypassed"] else 1.0
        for u, name in enumerate(self.unit_names):
            self.unit_flag[u] = data.get("units", {}).get(name, 0)
        self.registry.from_dict(data.get("bypass", {}))
        self._sync_authorizations()
        return notes


_BYPASS_MESSAGES = {
    "unauthorized": ("bypassed without a bypass authorization", "bypass now covered by an authorization"),
    "expired": ("bypass authorization expired while the interlock is still bypassed",
                "no longer bypassed on an expired authorization"),
    "trip_while_bypassed": ("trip condition is true while the interlock is bypassed",
                            "trip condition cleared or bypass ended"),
    "status_bad": ("bypass status tag has bad quality; bypass state held as last known",
                   "bypass status tag quality good again"),
    "overdue": ("bypassed longer than its maximum bypass duration", "no longer over its maximum bypass duration"),
}


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""
