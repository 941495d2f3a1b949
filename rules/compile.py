"""The compile step: from a validated `RulesConfig` and the point table's rows to the frozen arrays each
kernel takes. Pure data in, pure data out: nothing here runs a kernel or holds state, so the layout of
every rule family can be tested on its own (tests/test_rules_compile.py), and `rules.engine` only
allocates state beside these arrays and runs the kernels over them.

One function per rule family, in the order their alarms take in the engine's alarm index:

    compile_limit_alarms   per-tag HH/H/L/LL           -> limit kernel (first segment)
    compile_gas            GB/T 50493 levels 2 and 1   -> the same limit kernel, after the tag limits
    compile_bad_pv         TAG.BADPV of every alarmed tag: quality alarms after the configured ones
    compile_conditions     rate, deviation, discrete, quality and expression rules, one segment each
    compile_suppression_state  one `GROUP.STATE_BAD` alarm per suppression group: its condition is unknown
    compile_suppression    suppression by design: one expression slot per distinct condition
    compile_interlocks     bypass status tags, trip expressions, production units
    compile_analytics      the production unit of each alarm, for flood counting per unit
    compile_trip_capture   first-out causes, the tags recorded at a trip and around it, final elements,
                           consequential-alarm suppression after a trip

`compile_rules` runs them all and packs every expression (alarm rules, then suppression conditions,
then interlock trips, then first-out causes and final-element checks) into one bytecode program.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from rules import conditions as C
from rules.expr import Expression, parse_expression
from rules.gas import UNITS as GAS_UNITS
from rules.model import (
    BAD_PV_SUFFIX,
    NO_TRIP_HISTORY,
    PRIORITY_LEVELS,
    AlarmBehaviour,
    AlarmRule,
    BadPvTag,
    ExpressionSpec,
    GasChannel,
    Interlock,
    QualitySpec,
    RulesConfig,
    Suppression,
    TagAlarmConfig,
    bad_pv_tags,
    default_priority,
)
from rules.program import Program, pack

DIRECTIONS = {"both": C.BOTH, "rise": C.RISE, "high": C.RISE, "fall": C.FALL, "low": C.FALL}
QUALITY_MODES = {"bad": C.QUALITY_BAD, "bad_or_stale": C.QUALITY_BAD_OR_STALE, "not_good": C.QUALITY_NOT_GOOD}
CONDITION_KINDS = ("rate", "deviation", "discrete", "quality", "expression")
SEGMENTS = ("limit", *CONDITION_KINDS, "suppression_state")
STATE_BAD_SUFFIX = ".STATE_BAD"  # `<suppression group id>.STATE_BAD`: the group's condition cannot be decided
NEVER_SUPPRESSED_BY_GROUPS = ("gas", "suppression_state")  # GB/T 50493 gas alarms; a group's own state alarm


class AlarmInfo(NamedTuple):
    """What the engine knows about one alarm beyond its arrays: for events and listings. (A named
    tuple rather than a frozen dataclass: 100,000 of them are built at start-up.)"""

    id: str
    kind: str  # limit, gas, rate, deviation, discrete, quality, expression, bad_pv
    tag: str  # the tag it watches ("" for expressions)
    priority: str
    level: int  # core.types.Priority value
    description: str = ""
    limit: str = ""  # HH/H/L/LL, or "1"/"2" for gas levels
    setpoint: float | None = None
    unit: str = ""
    gas: str = ""
    toxic: bool = False
    gas_level: int = 0
    when: str = ""
    highly_managed: bool = False  # rules.managed: shelving or out of service needs an authorization


class Alarms(NamedTuple):
    """Alarms of one family: their infos and behaviours, in index order."""

    infos: list[AlarmInfo]
    behaviours: list[AlarmBehaviour]


@dataclass(frozen=True)
class LimitArrays:
    """Arguments of the limit kernel (tag limits, then gas levels): one entry per alarm."""

    rows: np.ndarray  # int64
    setpoint: np.ndarray  # float64
    deadband: np.ndarray  # float64
    high: np.ndarray  # bool

    def args(self) -> tuple[np.ndarray, ...]:
        return self.rows, self.setpoint, self.deadband, self.high


@dataclass(frozen=True)
class ConditionArrays:
    """Arguments of the rate, deviation, discrete and quality kernels; expression alarms read the
    program's first `n_expressions` results."""

    rate: tuple[np.ndarray, ...]  # rows, per, window, direction, limit, deadband
    deviation: tuple[np.ndarray, ...]  # rows, reference rows (-1: fixed setpoint), setpoint, direction, limit, deadband
    discrete: tuple[np.ndarray, ...]  # rows, state_start, states
    quality: tuple[np.ndarray, ...]  # rows, mode
    expressions: tuple[Expression, ...]


@dataclass(frozen=True)
class SuppressionPlan:
    """Per alarm the suppression slot it follows (-1 none); per slot its condition."""

    alarm_slot: np.ndarray  # int64, one per alarm
    expressions: tuple[Expression, ...]
    sources: tuple[str, ...]  # per slot, its condition as written (the key its state is saved under)
    trip_slots: tuple[tuple[int, str], ...] = ()  # (slot, interlock id): also on after that interlock trips
    group_slot: tuple[int, ...] = ()  # per rules.suppressions group, the slot of its own condition


@dataclass(frozen=True)
class InterlockArrays:
    """Arguments of the interlock kernel that come from configuration."""

    ids: tuple[str, ...]
    unit_names: tuple[str, ...]  # production units: declared ones, then any named only by an interlock
    status_start: np.ndarray  # int64, interlocks + 1
    status_rows: np.ndarray  # int64
    status_invert: np.ndarray  # uint8: 1 for in-service tags (zero while bypassed)
    trip_slot: np.ndarray  # int64, program result index of the trip condition, -1 none
    unit: np.ndarray  # int64, index into unit_names
    max_bypass: np.ndarray  # float64 seconds
    unit_max: np.ndarray  # int64 per unit
    protect_start: np.ndarray  # int64, interlocks + 1
    protect_rows: np.ndarray  # int64: the protected measurements (`protects`, else the trip's tags)

    def args(self) -> tuple[np.ndarray, ...]:
        return (self.status_start, self.status_rows, self.status_invert, self.trip_slot, self.unit,
                self.max_bypass, self.unit_max, self.protect_start, self.protect_rows)


@dataclass(frozen=True)
class TripCapturePlan:
    """What the engine records when an in-service interlock trips (`rules.trips`). Per interlock k:
    its first-out causes (program slots, sources), the tags whose values the trip event carries, the
    window of history kept around it, its final-element check and its consequential suppression."""

    trip_slot: np.ndarray  # int64 per interlock, program slot of its trip condition, -1 none
    cause_start: np.ndarray  # int64, interlocks + 1: interlock k's causes are cause_start[k]:cause_start[k+1]
    cause_slot: np.ndarray  # int64 per cause, its program slot
    cause_sources: tuple[str, ...]  # per cause
    cause_rows: tuple[tuple[int, ...], ...]  # per cause, the rows of its tags
    tags: tuple[tuple[str, ...], ...]  # per interlock: trip and cause tags, protected tags, final element tag
    rows: tuple[tuple[int, ...], ...]  # their point-table rows
    history: tuple[tuple[float, float], ...]  # per interlock (before, after) seconds; (0, 0): none
    interval: float  # seconds between history samples
    history_rows: np.ndarray  # int64, the rows sampled into the history ring (of interlocks with history)
    final_slot: np.ndarray  # int64 per interlock, program slot of the final element's expect, -1 none
    final_within: np.ndarray  # float64 per interlock
    consequential_duration: np.ndarray  # float64 per interlock, 0: none
    # (suppression slot, interlock) pairs: the slot is forced on while the interlock's consequences last
    consequential_slot: np.ndarray  # int64
    consequential_interlock: np.ndarray  # int64


@dataclass(frozen=True)
class BehaviourArrays:
    """The per-alarm settings of the ISA state machine."""

    on_delay: np.ndarray
    off_delay: np.ndarray
    latching: np.ndarray  # uint8
    realarm: np.ndarray


@dataclass(frozen=True)
class CompiledRules:
    infos: tuple[AlarmInfo, ...]
    index: dict[str, int]  # alarm id -> index
    bounds: dict[str, tuple[int, int]]  # segment -> (first, end) alarm index
    behaviour: BehaviourArrays
    limits: LimitArrays
    conditions: ConditionArrays
    suppression: SuppressionPlan
    interlocks: InterlockArrays
    trips: TripCapturePlan
    alarm_units: dict[str, str]  # alarm id -> production unit, for the alarms that belong to one
    program: Program  # alarm expressions, suppression conditions, interlock trips, causes, final elements

    @property
    def first_suppression_slot(self) -> int:
        return len(self.conditions.expressions)


def compile_rules(rules: RulesConfig, tag_rows: Mapping[str, int], tag_alarms: Iterable[TagAlarmConfig] = (),
                  tag_info: Mapping[str, Any] | None = None) -> CompiledRules:
    """`tag_rows` maps tag name to point-table row; `tag_info` (name -> TagConfig-like with `unit`) only adds
    units to messages. Raises ValueError on duplicate alarm ids or a suppression that matches nothing."""
    units = {name: getattr(info, "unit", "") or "" for name, info in (tag_info or {}).items()}

    def level(name: str) -> int:
        # a config parsed from YAML names declared priorities only; one built in code may keep a model
        # default (medium, critical) beside priorities of other names: that level's declared priority
        return int(rules.priorities[_declared(name, rules.priorities)])

    limit_alarms, limit_columns = compile_limit_alarms(tag_alarms, tag_rows, units, level)
    gas_alarms, gas_columns = compile_gas(rules.gas, tag_rows, level)
    limits = LimitArrays(*(np.array(a + b, dtype) for a, b, dtype in
                           zip(limit_columns, gas_columns, (np.int64, np.float64, np.float64, np.bool_))))
    infos = limit_alarms.infos + gas_alarms.infos
    behaviours = limit_alarms.behaviours + gas_alarms.behaviours
    bounds = {"limit": (0, len(infos))}
    bad_pv = compile_bad_pv(rules, tag_alarms)
    condition_alarms, conditions, condition_bounds = compile_conditions(rules.alarms, tag_rows, units, level,
                                                                        first=len(infos), bad_pv=bad_pv)
    gas_of = {channel.tag: channel.gas or channel.type for channel in rules.gas}
    infos += [info._replace(gas=gas_of[info.tag]) if info.kind == "bad_pv" and info.tag in gas_of else info
              for info in condition_alarms.infos]  # a gas channel's bad PV is gas detection: see never_suppressed
    behaviours += condition_alarms.behaviours
    bounds.update(condition_bounds)
    state_alarms = compile_suppression_state(rules, infos, level)
    bounds["suppression_state"] = (len(infos), len(infos) + len(state_alarms.infos))
    infos += state_alarms.infos
    behaviours += state_alarms.behaviours
    index = _index(infos)
    suppression = compile_suppression(infos, behaviours, rules, tag_rows)
    first_trip = len(conditions.expressions) + len(suppression.expressions)
    interlocks, trips = compile_interlocks(rules, tag_rows, first_trip)
    trip_votes = [il.bad_input_votes for il in rules.interlocks if il.trip is not None]
    capture, capture_expressions, capture_votes = compile_trip_capture(rules, tag_rows, interlocks.trip_slot,
                                                                       first_trip + len(trips), suppression)
    program = pack(list(conditions.expressions) + list(suppression.expressions) + trips + capture_expressions,
                   tag_rows, ["tripped"] * first_trip + trip_votes + capture_votes)
    return CompiledRules(tuple(infos), index, bounds, _behaviour_arrays(behaviours), limits, conditions,
                         suppression, interlocks, capture, compile_analytics(infos, rules, tag_info or {}), program)


def compile_limit_alarms(tag_alarms: Iterable[TagAlarmConfig], tag_rows: Mapping[str, int], units: Mapping[str, str],
                         level: Callable[[str], int]) -> tuple[Alarms, tuple[list, list, list, list]]:
    """Per-tag HH/H/L/LL: alarm `TAG.LEVEL`; columns rows, setpoints, deadbands, high."""
    alarms = Alarms([], [])
    columns: tuple[list, list, list, list] = ([], [], [], [])
    for config in tag_alarms:
        for limit in config.limits:
            behaviour = limit.behaviour
            alarms.infos.append(AlarmInfo(f"{config.tag}.{limit.level}", "limit", config.tag, behaviour.priority,
                                          level(behaviour.priority), behaviour.description, limit.level,
                                          limit.setpoint, units.get(config.tag, ""),
                                          highly_managed=behaviour.highly_managed))
            alarms.behaviours.append(behaviour)
            _append(columns, (tag_rows[config.tag], limit.setpoint, limit.deadband, limit.high))
    return alarms, columns


def compile_gas(channels: Sequence[GasChannel], tag_rows: Mapping[str, int],
                level: Callable[[str], int]) -> tuple[Alarms, tuple[list, list, list, list]]:
    """GB/T 50493 channels: `TAG.GAS2` then `TAG.GAS1` per channel, both high limits on the limit kernel."""
    alarms = Alarms([], [])
    columns: tuple[list, list, list, list] = ([], [], [], [])
    for channel in channels:
        for gas_level, setpoint, behaviour in ((2, channel.level2, channel.behaviour2),
                                               (1, channel.level1, channel.behaviour1)):
            alarms.infos.append(AlarmInfo(f"{channel.tag}.GAS{gas_level}", "gas", channel.tag, behaviour.priority,
                                          level(behaviour.priority), behaviour.description, str(gas_level),
                                          setpoint, GAS_UNITS[channel.type], channel.gas, channel.toxic, gas_level,
                                          highly_managed=behaviour.highly_managed))
            alarms.behaviours.append(behaviour)
            _append(columns, (tag_rows[channel.tag], setpoint, channel.deadband, True))
    return alarms, columns


def compile_bad_pv(rules: RulesConfig, tag_alarms: Iterable[TagAlarmConfig]) -> list[AlarmRule]:
    """`TAG.BADPV` for every alarmed tag (limits, gas channel, rate/deviation/discrete rule), in that order,
    as quality rules: active while the tag's quality is bad. Not for a tag whose own quality rule already
    says so, nor one turned off in `rules.bad_pv.tags`. A gas channel's tag defaults to the channel's
    level 1 priority: a detector in fault, inhibit or calibration leaves its area unwatched."""
    config = rules.bad_pv
    gas_priority = {channel.tag: config.gas_priority or channel.behaviour1.priority for channel in rules.gas}
    limit_tags = [alarms.tag for alarms in tag_alarms if alarms.limits]
    result = []
    for tag in bad_pv_tags(limit_tags, rules.alarms, rules.gas, config):
        own = config.tags.get(tag, BadPvTag())
        priority = _declared(own.priority or gas_priority.get(tag) or config.priority, rules.priorities)
        behaviour = AlarmBehaviour(
            priority=priority, on_delay=config.on_delay if own.on_delay is None else own.on_delay,
            off_delay=config.off_delay if own.off_delay is None else own.off_delay,
            description="bad PV: the value cannot be trusted")
        result.append(AlarmRule(f"{tag}{BAD_PV_SUFFIX}", QualitySpec(tag, config.trigger), behaviour))
    return result


def _declared(name: str, priorities: Mapping[str, int]) -> str:
    """`name` if declared; else the declared priority of its level (a config built in code may use the
    default names with other priorities); else the most urgent declared."""
    if name in priorities:
        return name
    level = name if name in PRIORITY_LEVELS else "medium"
    return default_priority(priorities, level) or max(priorities, key=priorities.__getitem__)


def compile_conditions(rules: Sequence[AlarmRule], tag_rows: Mapping[str, int], units: Mapping[str, str],
                       level: Callable[[str], int], first: int, bad_pv: Sequence[AlarmRule] = ()
                       ) -> tuple[Alarms, ConditionArrays, dict[str, tuple[int, int]]]:
    """The `rules.alarms` entries, grouped by kind (one kernel segment each, in CONDITION_KINDS order,
    configuration order within a kind), the `bad_pv` quality alarms after the configured quality rules;
    alarm indices start at `first`."""
    by_kind: dict[str, list[AlarmRule]] = {kind: [] for kind in CONDITION_KINDS}
    for rule in rules:
        by_kind[rule.kind].append(rule)
    by_kind["quality"] += bad_pv
    implicit = {rule.id for rule in bad_pv}
    alarms = Alarms([], [])
    bounds = {}
    expressions = []
    for kind in CONDITION_KINDS:
        start = first + len(alarms.infos)
        for rule in by_kind[kind]:
            spec, behaviour = rule.spec, rule.behaviour
            tag = getattr(spec, "tag", "")
            alarms.infos.append(AlarmInfo(rule.id, "bad_pv" if rule.id in implicit else kind, tag, behaviour.priority,
                                          level(behaviour.priority),
                                          behaviour.description, unit=units.get(tag, ""),
                                          setpoint=getattr(spec, "limit", None),
                                          when=spec.when.source if isinstance(spec, ExpressionSpec) else "",
                                          highly_managed=behaviour.highly_managed))
            alarms.behaviours.append(behaviour)
            if isinstance(spec, ExpressionSpec):
                expressions.append(spec.when)
        bounds[kind] = (start, first + len(alarms.infos))
    rows = tag_rows
    rate, dev = [r.spec for r in by_kind["rate"]], [r.spec for r in by_kind["deviation"]]
    discrete, quality = [r.spec for r in by_kind["discrete"]], [r.spec for r in by_kind["quality"]]
    state_start = np.zeros(len(discrete) + 1, np.int64)
    states: list[float] = []
    for k, spec in enumerate(discrete):
        states.extend(spec.states)
        state_start[k + 1] = len(states)
    arrays = ConditionArrays(
        rate=(np.array([rows[s.tag] for s in rate], np.int64),
              np.array([60.0 if s.per == 60.0 else 1.0 for s in rate], np.float64),
              np.array([s.window for s in rate], np.float64),
              np.array([DIRECTIONS[s.direction] for s in rate], np.int64),
              np.array([s.limit for s in rate], np.float64),
              np.array([s.deadband for s in rate], np.float64)),
        deviation=(np.array([rows[s.tag] for s in dev], np.int64),
                   np.array([rows[s.reference_tag] if s.reference_tag else -1 for s in dev], np.int64),
                   np.array([s.setpoint if s.setpoint is not None else 0.0 for s in dev], np.float64),
                   np.array([DIRECTIONS[s.direction] for s in dev], np.int64),
                   np.array([s.limit for s in dev], np.float64),
                   np.array([s.deadband for s in dev], np.float64)),
        discrete=(np.array([rows[s.tag] for s in discrete], np.int64), state_start,
                  np.array(states or [0.0], np.float64)),
        quality=(np.array([rows[s.tag] for s in quality], np.int64),
                 np.array([QUALITY_MODES[s.trigger] for s in quality], np.int64)),
        expressions=tuple(expressions))
    return alarms, arrays, bounds


def compile_suppression(infos: Sequence[AlarmInfo], behaviours: Sequence[AlarmBehaviour], rules: RulesConfig,
                        tag_rows: Mapping[str, int]) -> SuppressionPlan:
    """An alarm's own `suppressed_when` and every `rules.suppressions` group whose patterns match its id
    combine into one condition (`(a) or (b)`); alarms with the same condition share its slot. An alarm
    listed as a consequence of interlock trips (never a gas alarm) gets a slot whose condition also holds
    while those consequences last (the engine forces it on: `TripCapturePlan.consequential_slot`)."""
    conditions_of: dict[int, list[Expression]] = {}
    trips_of: dict[int, list[str]] = {}
    for il in rules.interlocks:
        if il.consequential is not None:
            for i in consequences(infos, il):
                trips_of.setdefault(i, []).append(il.id)
    for i, behaviour in enumerate(behaviours):
        if behaviour.suppressed_when is not None:
            conditions_of.setdefault(i, []).append(behaviour.suppressed_when)
    for group in rules.suppressions:
        for i in group_members(infos, group):
            conditions_of.setdefault(i, []).append(group.when)
    known = set(tag_rows).__contains__
    slots: dict[str, int] = {}
    expressions: list[Expression] = []
    trip_slots: list[tuple[int, str]] = []
    alarm_slot = np.full(len(infos), -1, np.int64)
    for i in sorted(set(conditions_of) | set(trips_of)):
        unique = list(dict.fromkeys(expression.source for expression in conditions_of.get(i, ())))
        condition = " or ".join(f"({s})" for s in unique) if len(unique) > 1 else "".join(unique)
        tripped = trips_of.get(i, [])
        source = condition if not tripped else " or ".join(
            ([f"({condition})"] if condition else []) + [f"after a trip of {', '.join(tripped)}"])
        if source not in slots:
            slots[source] = len(expressions)
            if len(unique) == 1:
                expressions.append(conditions_of[i][0])
            else:
                expressions.append(parse_expression(condition or "false", known))
            trip_slots.extend((slots[source], interlock) for interlock in tripped)
        alarm_slot[i] = slots[source]
    for group in rules.suppressions:  # each group's own condition, for its STATE_BAD alarm
        if group.when.source not in slots:
            slots[group.when.source] = len(expressions)
            expressions.append(group.when)
    return SuppressionPlan(alarm_slot, tuple(expressions), tuple(slots), tuple(trip_slots),
                           tuple(slots[group.when.source] for group in rules.suppressions))


def never_suppressed(info: AlarmInfo) -> bool:
    """Gas detection (GB/T 50493: its levels and a channel's bad PV) and a group's own STATE_BAD alarm are
    never suppressed by process state or after a trip."""
    return info.kind in NEVER_SUPPRESSED_BY_GROUPS or info.kind == "bad_pv" and bool(info.gas)


def group_members(infos: Sequence[AlarmInfo], group: Suppression) -> list[int]:
    """The alarms a suppression group suppresses: those its patterns match, never a gas alarm (GB/T 50493:
    gas detection is not suppressed by process state, not even by "*") nor a group's STATE_BAD alarm."""
    if not any(fnmatch.fnmatchcase(info.id, p) for info in infos for p in group.alarms):
        raise ValueError(f"suppression {group.id!r}: no alarm id matches {', '.join(group.alarms)}")
    return [i for i, info in enumerate(infos) if not never_suppressed(info)
            and any(fnmatch.fnmatchcase(info.id, p) for p in group.alarms)]


def compile_suppression_state(rules: RulesConfig, infos: Sequence[AlarmInfo], level: Callable[[str], int]) -> Alarms:
    """Per suppression group an alarm `GROUP.STATE_BAD`, active while the group's condition is unknown (its
    unit-state tag is bad): the group then does not suppress, and this says why. Its priority is the highest
    of the alarms the group suppresses; its tag the condition's first tag."""
    alarms = Alarms([], [])
    for group in rules.suppressions:
        members = [infos[i] for i in group_members(infos, group)]
        priority = max(members, key=lambda info: info.level).priority if members else min(rules.priorities,
                                                                                           key=level)
        alarms.infos.append(AlarmInfo(f"{group.id}{STATE_BAD_SUFFIX}", "suppression_state",
                                      group.when.tags[0] if group.when.tags else "", priority, level(priority),
                                      f"state of suppression {group.id} unknown: not suppressing",
                                      when=group.when.source))
        alarms.behaviours.append(AlarmBehaviour(priority=priority))
    return alarms


def consequences(infos: Sequence[AlarmInfo], interlock: Interlock) -> list[int]:
    """The alarms an interlock's trip suppresses: its `consequential` patterns, gas alarms never."""
    patterns = interlock.consequential.alarms if interlock.consequential is not None else ()
    return [i for i, info in enumerate(infos)
            if not never_suppressed(info)
            and any(fnmatch.fnmatchcase(info.id, p) for p in patterns)]


def compile_interlocks(rules: RulesConfig, tag_rows: Mapping[str, int],
                       first_trip_slot: int) -> tuple[InterlockArrays, list[Expression]]:
    """Status tags per interlock (bypass tags, then in-service tags, inverted), the program slot of each
    trip condition (numbered from `first_trip_slot`), and the production units. Returns the arrays and the
    trip expressions to pack."""
    interlocks = rules.interlocks
    unit_names = [u.name for u in rules.units]
    for il in interlocks:
        if il.unit not in unit_names:
            unit_names.append(il.unit)
    unit_index = {name: u for u, name in enumerate(unit_names)}
    unit_max = {u.name: u.max_bypassed for u in rules.units}
    status_start, status_rows, status_invert, trip_slot, trips = [0], [], [], [], []
    protect_start, protect_rows = [0], []
    for il in interlocks:
        protect_rows.extend(tag_rows[tag] for tag in il.protects or (il.trip.tags if il.trip is not None else ()))
        protect_start.append(len(protect_rows))
        for tags, invert in ((il.bypass_tags, 0), (il.in_service_tags, 1)):
            status_rows.extend(tag_rows[tag] for tag in tags)
            status_invert.extend(invert for _ in tags)
        status_start.append(len(status_rows))
        trip_slot.append(first_trip_slot + len(trips) if il.trip is not None else -1)
        if il.trip is not None:
            trips.append(il.trip)
    arrays = InterlockArrays(
        ids=tuple(il.id for il in interlocks), unit_names=tuple(unit_names),
        status_start=np.array(status_start, np.int64), status_rows=np.array(status_rows, np.int64),
        status_invert=np.array(status_invert, np.uint8), trip_slot=np.array(trip_slot, np.int64),
        unit=np.array([unit_index[il.unit] for il in interlocks], np.int64),
        max_bypass=np.array([il.max_bypass for il in interlocks], np.float64),
        unit_max=np.array([unit_max.get(name, 1 << 30) for name in unit_names], np.int64),
        protect_start=np.array(protect_start, np.int64), protect_rows=np.array(protect_rows, np.int64))
    return arrays, trips


def compile_trip_capture(rules: RulesConfig, tag_rows: Mapping[str, int], trip_slot: np.ndarray, first_slot: int,
                         suppression: SuppressionPlan) -> tuple[TripCapturePlan, list[Expression], list[str]]:
    """Per interlock: its first-out causes (configured `causes`, else the top-level `or` operands of its
    trip; a single cause is the trip itself and reuses its slot), the tags a trip event carries, its
    history window and final-element check. Returns the plan, the expressions to pack after the trips
    (numbered from `first_slot`) and how each counts an unknown vote input: a cause as its interlock
    configures, a final element's `expect` as healthy (not acted: a bad feedback confirms nothing)."""
    known = set(tag_rows).__contains__
    extra: list[Expression] = []
    votes: list[str] = []

    def slot_of(expression: Expression, vote: str) -> int:
        extra.append(expression)
        votes.append(vote)
        return first_slot + len(extra) - 1

    cause_start, cause_slot, sources, cause_rows, tags, rows, history = [0], [], [], [], [], [], []
    final_slot, final_within, consequential_duration = [], [], []
    for k, il in enumerate(rules.interlocks):
        found = il.causes or (split_or(il.trip, known) if il.trip is not None else ())
        if len(found) == 1 and il.trip is not None and found[0].source == il.trip.source:
            cause_slot.append(int(trip_slot[k]))
        else:
            cause_slot.extend(slot_of(cause, il.bad_input_votes) for cause in found)
        sources.extend(cause.source for cause in found)
        cause_rows.extend(tuple(tag_rows[tag] for tag in cause.tags) for cause in found)
        cause_start.append(len(cause_slot))
        names = [*(il.trip.tags if il.trip is not None else ()), *(t for c in found for t in c.tags), *il.protects]
        if il.final_element is not None:
            names += [il.final_element.tag, *il.final_element.expect.tags]
        names = list(dict.fromkeys(names))
        tags.append(tuple(names))
        rows.append(tuple(tag_rows[name] for name in names))
        window = il.history or rules.trip_history
        history.append((window.before, window.after) if il.trip is not None and window.enabled
                       else (NO_TRIP_HISTORY.before, NO_TRIP_HISTORY.after))
        final = il.final_element
        final_slot.append(slot_of(final.expect, "healthy") if final is not None and il.trip is not None else -1)
        final_within.append(final.within if final is not None else 0.0)
        consequential_duration.append(il.consequential.duration if il.consequential is not None else 0.0)
    index = {il.id: k for k, il in enumerate(rules.interlocks)}
    recorded = sorted({row for k, window in enumerate(history) if window != (0.0, 0.0) for row in rows[k]})
    plan = TripCapturePlan(
        trip_slot=trip_slot, cause_start=np.array(cause_start, np.int64), cause_slot=np.array(cause_slot, np.int64),
        cause_sources=tuple(sources), cause_rows=tuple(cause_rows), tags=tuple(tags), rows=tuple(rows),
        history=tuple(history), interval=rules.trip_history.interval,
        history_rows=np.array(recorded, np.int64), final_slot=np.array(final_slot, np.int64),
        final_within=np.array(final_within, np.float64),
        consequential_duration=np.array(consequential_duration, np.float64),
        consequential_slot=np.array([slot for slot, _ in suppression.trip_slots], np.int64),
        consequential_interlock=np.array([index[il] for _, il in suppression.trip_slots], np.int64))
    return plan, extra, votes


_OR = re.compile(r"(?<![\w`.])or(?![\w`])")


def split_or(expression: Expression, known: Callable[[str], bool]) -> tuple[Expression, ...]:
    """The operands of a top-level `or` (outside parentheses and backticks), each parsed on its own: the
    default first-out causes of a trip. An expression without one is its own single cause."""
    text = expression.source
    depth, quoted, level = 0, False, []
    for char in text:
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        level.append(depth if not quoted else -1)
    cuts = [m for m in _OR.finditer(text) if level[m.start()] == 0]
    if not cuts:
        return (expression,)
    bounds = [0, *(x for m in cuts for x in (m.start(), m.end())), len(text)]
    return tuple(parse_expression(text[a:b].strip(), known) for a, b in zip(bounds[::2], bounds[1::2]))


def compile_analytics(infos: Sequence[AlarmInfo], rules: RulesConfig, tag_info: Mapping[str, Any]) -> dict[str, str]:
    """An alarm belongs to the production unit of the tags it reads (tag_info's `production_unit`) when
    they all share one; an expression over tags of two units, or of none, belongs to no unit."""
    unit_of_tag = {name: getattr(info, "production_unit", "") or "" for name, info in tag_info.items()}
    expression_tags = {rule.id: rule.spec.when.tags for rule in rules.alarms if isinstance(rule.spec, ExpressionSpec)}
    result = {}
    for info in infos:
        units = {unit_of_tag.get(tag, "") for tag in expression_tags.get(info.id, (info.tag,))}
        if len(units) == 1 and "" not in units:
            result[info.id] = units.pop()
    return result


def _behaviour_arrays(behaviours: Sequence[AlarmBehaviour]) -> BehaviourArrays:
    return BehaviourArrays(on_delay=np.array([b.on_delay for b in behaviours], np.float64),
                           off_delay=np.array([b.off_delay for b in behaviours], np.float64),
                           latching=np.array([b.latching for b in behaviours], np.uint8),
                           realarm=np.array([b.realarm for b in behaviours], np.float64))


def _index(infos: Sequence[AlarmInfo]) -> dict[str, int]:
    index = {info.id: i for i, info in enumerate(infos)}
    if len(index) != len(infos):
        seen: set[str] = set()
        duplicates = sorted({info.id for info in infos if info.id in seen or seen.add(info.id)})
        raise ValueError(f"duplicate alarm ids: {', '.join(duplicates)}")
    return index


def _append(columns: tuple[list, ...], values: tuple) -> None:
    for column, value in zip(columns, values):
        column.append(value)
