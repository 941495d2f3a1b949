"""The validated rules configuration as frozen objects; `rules.config` builds them, `rules.engine` runs them.

Times are seconds. Priorities are the names declared under `rules.priorities` (default: critical, high,
medium, low), each mapped to a `core.types.Priority` level in `RulesConfig.priorities`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from typing import Any

from rules.expr import Expression

LIMIT_LEVELS = ("HH", "H", "L", "LL")
PRIORITY_LEVELS = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}
DEFAULT_PRIORITIES = {"critical": 4, "high": 3, "medium": 2, "low": 1}
BAD_PV_SUFFIX = ".BADPV"  # `TAG.BADPV`: the tag's value cannot be trusted (docs/rules.md, "Bad input")
INTERLOCK_TAG_PREFIX = "IL."  # `IL.<interlock id>`: 1 in service, 0 bypassed (docs/rules.md)

BYPASS_EVENTS = ("started", "ended", "unauthorized", "expired", "trip_while_bypassed", "measurement_bad", "too_many",
                 "status_bad", "overdue", "trip", "final_element_failed")
DEFAULT_BYPASS_PRIORITIES = {"started": "medium", "ended": "low", "unauthorized": "high", "expired": "high",
                             "trip_while_bypassed": "critical", "measurement_bad": "high", "too_many": "high",
                             "status_bad": "high", "overdue": "high", "trip": "high", "final_element_failed": "high"}


@dataclass(frozen=True)
class TagInfo:
    """What the rules need to know about a tag. `gatewayd.config.model.TagConfig` fits this shape too."""

    name: str
    unit: str = ""
    range_low: float | None = None
    range_high: float | None = None
    production_unit: str = ""


@dataclass(frozen=True)
class AlarmBehaviour:
    """Settings every alarm has, whatever raises it."""

    priority: str = "medium"
    on_delay: float = 0.0
    off_delay: float = 0.0
    latching: bool = False
    realarm: float = 0.0  # 0: never; else an acknowledged alarm still active this long becomes UNACK again
    suppressed_when: Expression | None = None
    description: str = ""
    highly_managed: bool = False  # shelving or out of service needs an authorization (rules.engine.act)


@dataclass(frozen=True)
class LimitAlarm:
    """One analog limit of a tag: active from value >= setpoint (high) or <= setpoint (low), clear only
    past setpoint -/+ deadband."""

    level: str  # HH, H, L, LL
    setpoint: float
    deadband: float
    behaviour: AlarmBehaviour
    line: int = 0

    @property
    def high(self) -> bool:
        return self.level in ("HH", "H")


@dataclass(frozen=True)
class TagAlarmConfig:
    """The `alarms:` block of one tag; compatible with today's hh/h/l/ll/deadband/priority keys."""

    tag: str
    limits: tuple[LimitAlarm, ...]
    line: int = 0

    def limit(self, level: str) -> LimitAlarm | None:
        return next((limit for limit in self.limits if limit.level == level), None)

    # today's AlarmLimits attributes, so existing callers keep working during integration
    @property
    def hh(self) -> float | None:
        return self._setpoint("HH")

    @property
    def h(self) -> float | None:
        return self._setpoint("H")

    @property
    def l(self) -> float | None:  # noqa: E743 - the standard's own name for the low limit
        return self._setpoint("L")

    @property
    def ll(self) -> float | None:
        return self._setpoint("LL")

    @property
    def deadband(self) -> float:
        return max((limit.deadband for limit in self.limits), default=0.0)

    @property
    def priority(self) -> str:
        return self.limits[0].behaviour.priority if self.limits else "medium"

    def _setpoint(self, level: str) -> float | None:
        limit = self.limit(level)
        return None if limit is None else limit.setpoint


@dataclass(frozen=True)
class RateSpec:
    tag: str
    limit: float  # engineering units per `per`
    per: float  # 1.0 per second, 60.0 per minute
    window: float
    direction: str = "both"  # rise, fall, both
    deadband: float = 0.0


@dataclass(frozen=True)
class DeviationSpec:
    tag: str
    limit: float
    reference_tag: str | None = None
    setpoint: float | None = None
    direction: str = "both"  # high (tag above reference), low, both
    deadband: float = 0.0


@dataclass(frozen=True)
class DiscreteSpec:
    tag: str
    states: tuple[float, ...]  # alarm while the value equals one of these


@dataclass(frozen=True)
class QualitySpec:
    tag: str
    trigger: str = "bad_or_stale"  # bad, bad_or_stale, not_good


@dataclass(frozen=True)
class ExpressionSpec:
    when: Expression


RuleSpec = RateSpec | DeviationSpec | DiscreteSpec | QualitySpec | ExpressionSpec


@dataclass(frozen=True)
class AlarmRule:
    """One entry of `rules.alarms`."""

    id: str
    spec: RuleSpec
    behaviour: AlarmBehaviour
    line: int = 0

    @property
    def kind(self) -> str:
        return {RateSpec: "rate", DeviationSpec: "deviation", DiscreteSpec: "discrete", QualitySpec: "quality",
                ExpressionSpec: "expression"}[type(self.spec)]


@dataclass(frozen=True)
class GasChannel:
    """A gas detector channel (GB/T 50493-2019): two alarm levels on one concentration tag."""

    tag: str
    type: str  # combustible (%LEL) or toxic (ppm)
    gas: str
    level1: float
    level2: float
    oel: float | None = None  # ppm, toxic only
    idlh: float | None = None  # ppm, toxic only
    range_limited: bool = False
    deadband: float = 0.0
    behaviour1: AlarmBehaviour = AlarmBehaviour(priority="high")
    behaviour2: AlarmBehaviour = AlarmBehaviour(priority="critical", highly_managed=True)  # as in YAML
    line: int = 0
    oel_kind: str = ""  # MAC, PC-STEL, PC-TWA (GBZ 2.1); "" when the configuration does not say
    oel_as_given: tuple[float, str] | None = None  # (value, "ppm" or "mg/m3") as configured; `oel` is in ppm
    molar_mass: float | None = None  # g/mol, for an OEL given in mg/m3

    @property
    def toxic(self) -> bool:
        return self.type == "toxic"


@dataclass(frozen=True)
class Suppression:
    """Suppression by design: while `when` holds, the alarms matching `alarms` (glob patterns) are DSUPR."""

    id: str
    when: Expression
    alarms: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class ProductionUnit:
    name: str
    max_bypassed: int
    line: int = 0


@dataclass(frozen=True)
class TripHistory:
    """How much of an interlock's tags is kept around a trip: `before` and `after` seconds of their reads,
    sampled every `interval` seconds (one sampling interval for the whole engine: the global one)."""

    before: float = 60.0
    after: float = 30.0
    interval: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.before > 0 or self.after > 0


NO_TRIP_HISTORY = TripHistory(0.0, 0.0)


@dataclass(frozen=True)
class FinalElement:
    """The final element an interlock drives (a valve, a pump) and the feedback that shows it acted:
    after a trip `expect` must become true within `within` seconds, else `final_element_failed`."""

    tag: str
    expect: Expression
    within: float


@dataclass(frozen=True)
class ConsequentialSuppression:
    """Alarms (ids or glob patterns, never gas alarms) suppressed by design for `duration` seconds after
    the interlock trips: the consequences of the shutdown, not news to the operator."""

    alarms: tuple[str, ...]
    duration: float


@dataclass(frozen=True)
class Interlock:
    """A SIS interlock whose bypass state the gateway supervises (it never acts on it)."""

    id: str
    unit: str
    max_bypass: float
    bypass_tags: tuple[str, ...] = ()  # non-zero while bypassed
    in_service_tags: tuple[str, ...] = ()  # zero while bypassed
    protects: tuple[str, ...] = ()
    trip: Expression | None = None
    description: str = ""
    line: int = 0
    bad_input_votes: str = "tripped"  # a vote() in `trip` counts an unknown condition as tripped or healthy
    causes: tuple[Expression, ...] = ()  # first-out inputs; empty: the top-level `or` operands of `trip`
    history: TripHistory | None = None  # None: rules.trip_history
    final_element: FinalElement | None = None
    consequential: ConsequentialSuppression | None = None

    @property
    def state_tag(self) -> str:
        """The virtual tag that carries this interlock's in-service state upstream as a monitored value."""
        return f"{INTERLOCK_TAG_PREFIX}{self.id}"


@dataclass(frozen=True)
class BadPvTag:
    """`rules.bad_pv.tags.TAG`: one tag's own bad-PV settings; None keeps the section's."""

    enabled: bool = True
    reason: str = ""  # why it is off: required when enabled is false
    priority: str | None = None
    on_delay: float | None = None
    off_delay: float | None = None


@dataclass(frozen=True)
class BadPvConfig:
    """The bad-PV alarm every alarmed tag gets (`TAG.BADPV`), active while its quality is bad."""

    priority: str = "medium"
    gas_priority: str | None = None  # a gas channel's tag: None is the channel's level 1 priority
    on_delay: float = 0.0
    off_delay: float = 10.0
    trigger: str = "bad"  # bad, bad_or_stale (as for quality rules)
    tags: dict[str, BadPvTag] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalyticsConfig:
    chatter_count: int = 3
    chatter_window: float = 60.0
    stale_after: float = 86400.0
    flood_start: int = 10  # more than this many in flood_window starts a flood
    flood_end: int = 5  # fewer than this many ends it
    flood_window: float = 600.0
    report_interval: float = 3600.0  # how often an alarm-rate summary event is emitted; 0: never
    shelved_report_interval: float = 3600.0  # how often the shelved/suppressed/out-of-service report; 0: never


@dataclass(frozen=True)
class RulesConfig:
    priorities: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    shelving_max: float = 8 * 3600.0
    highly_managed_max: float = 8 * 3600.0  # longest authorized shelf or out of service of a highly managed alarm
    analytics: AnalyticsConfig = AnalyticsConfig()
    alarms: tuple[AlarmRule, ...] = ()
    gas: tuple[GasChannel, ...] = ()
    suppressions: tuple[Suppression, ...] = ()
    units: tuple[ProductionUnit, ...] = ()
    interlocks: tuple[Interlock, ...] = ()
    bypass_priorities: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BYPASS_PRIORITIES))
    trip_history: TripHistory = TripHistory()
    bad_pv: BadPvConfig = BadPvConfig()


def alarmed_tags(limit_tags: Iterable[str], alarms: Iterable[AlarmRule], gas: Iterable[GasChannel]) -> list[str]:
    """The tags that may have a bad-PV alarm, in order: with limits, a gas channel, a rate, deviation or
    discrete rule watching its value, or read by an expression alarm (three-valued logic may hold such an
    alarm on the other inputs, so the failed one must speak for itself)."""
    alarms = tuple(alarms)
    watched = list(limit_tags) + [channel.tag for channel in gas]
    watched += [rule.spec.tag for rule in alarms if rule.kind in ("rate", "deviation", "discrete")]
    watched += [tag for rule in alarms if rule.kind == "expression" for tag in rule.spec.when.tags]
    return list(dict.fromkeys(watched))


def bad_pv_tags(limit_tags: Iterable[str], alarms: Iterable[AlarmRule], gas: Iterable[GasChannel],
                config: BadPvConfig) -> list[str]:
    """The tags that have `TAG.BADPV`: the alarmed ones, but not where a quality rule of the tag's own
    already says it, nor those `rules.bad_pv.tags` turns off."""
    alarms = tuple(alarms)
    own_quality = {rule.spec.tag for rule in alarms if rule.kind == "quality"}
    return [tag for tag in alarmed_tags(limit_tags, alarms, gas)
            if tag not in own_quality and config.tags.get(tag, BadPvTag()).enabled]


def default_priority(priorities: Mapping[str, int] | Iterable[str], level: str) -> str | None:
    """The priority an alarm or event gets when its configuration names none and its default is the level
    `level`: the priority called `level` if declared, else the first one declared at that level, else None
    (the configuration is refused). A plain list of names knows only the default names."""
    levels = priorities if isinstance(priorities, Mapping) else {name: DEFAULT_PRIORITIES.get(name, -1)
                                                                 for name in priorities}
    if level in levels:
        return level
    return next((name for name, value in levels.items() if value == PRIORITY_LEVELS[level]), None)


def jsonable(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(value) if not isinstance(value, bool) else value
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    return value
