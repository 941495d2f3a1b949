"""The rules configuration: per-tag `alarms:` blocks and the top-level `rules:` section.

Validated with the `gatewayd.config.schema` toolkit: every issue is collected with file, line and key
path; nothing is repaired. Called by `gatewayd.config.load`:

    alarms = parse_tag_alarms(tag_node.get("alarms"), f"{path}.alarms", line, reader, tag_config,
                              priorities=priority_names(document.get("rules")))
    rules = parse_rules_section(document.get("rules"), "rules", line, reader, {tag.name: tag ...})

Both return frozen objects (`rules.model`), or None when the block is absent or invalid (the reader
then holds the issues). See docs/rules.md for the YAML shape.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from gatewayd.config.schema import positive_duration
from gatewayd.config.schema import (
    Field,
    Invalid,
    Reader,
    boolean,
    duration,
    identifier,
    integer,
    join,
    number,
    one_of,
    text,
)
from rules.expr import ExpressionError, parse_expression
from rules.gas import GAS_TYPES, OEL_KINDS, ON_DELAY_MAX, behaviour_problems, mg_per_m3_to_ppm, setpoint_problems
from rules.gas import OEL_UNITS as GAS_OEL_UNITS
from rules.gas import UNITS as GAS_UNITS
from rules.model import (
    BAD_PV_SUFFIX,
    BYPASS_EVENTS,
    DEFAULT_BYPASS_PRIORITIES,
    DEFAULT_PRIORITIES,
    LIMIT_LEVELS,
    NO_TRIP_HISTORY,
    PRIORITY_LEVELS,
    AlarmBehaviour,
    AlarmRule,
    AnalyticsConfig,
    BadPvConfig,
    BadPvTag,
    DeviationSpec,
    DiscreteSpec,
    ConsequentialSuppression,
    ExpressionSpec,
    FinalElement,
    GasChannel,
    Interlock,
    LimitAlarm,
    ProductionUnit,
    QualitySpec,
    RateSpec,
    RulesConfig,
    Suppression,
    TagAlarmConfig,
    TripHistory,
    alarmed_tags,
    bad_pv_tags,
    default_priority,
)

ALARM_CLASSES = ("standard", "highly_managed")
FLOOD_WINDOW_MAX = 3600.0  # rules.analytics keeps one hour of activations (peak per hour)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _any(value: Any) -> Any:
    return value


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def positive_number(value: Any) -> float:
    result = number()(value)
    if result <= 0:
        raise Invalid(f"must be above zero, got {value!r}")
    return result


def _at_most(seconds: float, maximum: float, why: str) -> float:
    if seconds > maximum:
        raise Invalid(f"{seconds:g} s is longer than the {maximum:g} s allowed: {why}")
    return seconds


def _at_least(seconds: float, minimum: float) -> float:
    if seconds < minimum:
        raise Invalid(f"{seconds:g} s is shorter than the {minimum:g} s allowed")
    return seconds


def _deadband(value: Any) -> float | str:
    """A number in engineering units, or 'N%' of the tag's range (resolved by the caller)."""
    if isinstance(value, str) and _PERCENT.match(value):
        return value.strip()
    return number(0.0)(value)


def _priority(names: Iterable[str]) -> Callable[[Any], str]:
    choices = tuple(names)

    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"{value!r} is not a priority; configured priorities: {', '.join(choices)}")
        return value

    return convert


def _tag_ref(tags: Mapping[str, Any]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in tags:
            close = difflib.get_close_matches(str(value), list(tags), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise Invalid(f"{value!r} is not a tag{hint}")
        return value

    return convert


def _tag_list(tags: Mapping[str, Any]) -> Callable[[Any], tuple[str, ...]]:
    single = _tag_ref(tags)

    def convert(value: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        result = tuple(single(item) for item in items)
        if len(set(result)) != len(result):
            raise Invalid("a tag is listed twice")
        return result

    return convert


def _expression(tags: Mapping[str, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return parse_expression(value, tags)
        except ExpressionError as exc:
            raise Invalid(f"bad expression {value!r}: {exc}") from None

    return convert


def _number_or_bool(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return number()(value)


def priority_names(rules_node: Any) -> tuple[str, ...]:
    """The priority names that tag alarms may use: `rules.priorities` keys if given, else the defaults.
    (The section itself is validated by `parse_rules_section`.)"""
    return tuple(declared_priorities(rules_node))


def declared_priorities(rules_node: Any) -> dict[str, int]:
    """`rules.priorities` as name -> level, read leniently (an unknown level is -1) for the tag sections,
    which are parsed before the rules section validates it; the defaults when it is absent."""
    if isinstance(rules_node, dict) and isinstance(rules_node.get("priorities"), dict) and rules_node["priorities"]:
        return {str(key): PRIORITY_LEVELS.get(value, -1) if isinstance(value, str) else -1
                for key, value in rules_node["priorities"].items()}
    return dict(DEFAULT_PRIORITIES)


def ranked_priorities(priorities: Mapping[str, int]) -> list[str]:
    """The first declared priority of each level, most urgent first (gas levels default to the top two)."""
    first_of_level: dict[int, str] = {}
    for name, value in priorities.items():
        first_of_level.setdefault(value, name)
    return [first_of_level[value] for value in sorted(first_of_level, reverse=True)]


# ------------------------------------------------------------------------------------- per-tag alarms

def _behaviour_fields(priorities: Iterable[str], priority_default: str | None) -> dict[str, Field]:
    return {
        "priority": Field(_priority(priorities), priority_default,
                          "one of rules.priorities; default medium (or the first priority of level medium)"),
        "on_delay": Field(duration, None, "raise only when the condition held this long"),
        "off_delay": Field(duration, None, "report the return only when clear this long"),
        "latching": Field(boolean, None, "stay in alarm until reset by an operator"),
        "realarm": Field(duration, None, "acknowledged and still active this long: unacknowledged again"),
        "description": Field(text, None, "shown with the alarm's events and in `gatewayd alarms`"),
        "class": Field(one_of(*ALARM_CLASSES), None, "standard, or highly_managed: shelving or taking it out of "
                                                     "service needs a permit and an approver"),
    }


@functools.cache  # one table per set of priorities, not one per tag: 100,000 alarms are parsed at start
def _limit_fields(priorities: tuple[str, ...]) -> dict[str, Field]:
    return {"value": Field(number(), doc="the limit, in engineering units"),
            "deadband": Field(_deadband, None, "engineering units or N% of range"),
            **_behaviour_fields(priorities, None)}


@functools.cache
def tag_alarm_fields(priorities: tuple[str, ...] = tuple(DEFAULT_PRIORITIES),
                     priority_default: str | None = "medium") -> dict[str, Field]:
    fields = {key: Field(_any, None, f"{key.upper()} limit: a number or a mapping with value, deadband, "
                                     f"on_delay, off_delay, priority, ...") for key in ("hh", "h", "l", "ll")}
    fields["deadband"] = Field(_deadband, 0.0, "for every limit: engineering units or N% of range")
    fields.update(_behaviour_fields(priorities, priority_default))
    fields["suppressed_when"] = Field(_any, None, "set under rules.suppression instead")
    return fields


@functools.lru_cache(maxsize=4096)
def _shared_behaviour(priority: str, on_delay: float, off_delay: float, latching: bool, realarm: float,
                      description: str, highly_managed: bool = False) -> AlarmBehaviour:
    """One object for equal settings: most of 100,000 limits share a few, and the config crosses a
    process boundary pickled (gatewayd.config.load_config_isolated), where shared objects go once."""
    return AlarmBehaviour(priority=priority, on_delay=on_delay, off_delay=off_delay, latching=latching,
                          realarm=realarm, description=description, highly_managed=highly_managed)


def parse_tag_alarms(node: Any, path: str, line: int, reader: Reader, tag: Any,
                     priorities: Mapping[str, int] | Iterable[str] = tuple(DEFAULT_PRIORITIES),
                     ) -> TagAlarmConfig | None:
    """The `alarms:` block of one tag (`tag` has name, range_low, range_high). None if absent or invalid.
    `priorities` are the declared names, best with their levels (`declared_priorities`), which pick the
    default priority when `medium` is not declared.

    Compatible with the first keys (hh, h, l, ll, deadband, priority); adds per-limit mappings and
    on_delay, off_delay, latching, realarm for all limits or per limit."""
    if node is None:
        return None
    fallback = default_priority(priorities, "medium")
    priorities = tuple(priorities)
    issues_before = len(reader.issues)
    values = reader.section(node, path, line, tag_alarm_fields(priorities, fallback))
    if values is None:
        return None
    if values.get("suppressed_when") is not None:
        reader.error(Reader.key_line(node, "suppressed_when"), join(path, "suppressed_when"),
                     "suppression by design of tag alarms is declared under rules.suppression "
                     "(when: ..., alarms: [TAG.HH, ...])")
    low, high = getattr(tag, "range_low", None), getattr(tag, "range_high", None)

    def resolve_deadband(value: Any, key_path: str, key_line: int) -> float | None:
        if not isinstance(value, str):
            return value
        if low is None or high is None:
            reader.error(key_line, key_path, f"a deadband of {value} needs the tag's range: set range: [low, high]")
            return None
        return float(_PERCENT.match(value).group(1)) / 100.0 * (high - low)

    default_deadband = resolve_deadband(values.get("deadband", 0.0), join(path, "deadband"),
                                        Reader.key_line(node, "deadband"))
    limits: list[LimitAlarm] = []
    setpoints: dict[str, tuple[float, int]] = {}
    for level in LIMIT_LEVELS:
        key = level.lower()
        if key not in values or values[key] is None:
            continue
        key_path, key_line = join(path, key), Reader.key_line(node, key)
        spec = values[key]
        if isinstance(spec, dict):
            own = reader.section(spec, key_path, key_line, _limit_fields(priorities))
            if own is None or "value" not in own:
                continue
        else:
            try:
                own = {"value": number()(spec)}
            except Invalid as exc:
                reader.error(key_line, key_path, f"{exc}; or a mapping with value, deadband, on_delay, ...")
                continue
        merged = {name: own.get(name) if own.get(name) is not None else values.get(name)
                  for name in ("priority", "on_delay", "off_delay", "latching", "realarm", "description", "class")}
        band = resolve_deadband(own["deadband"], join(key_path, "deadband"), key_line) \
            if own.get("deadband") is not None else default_deadband
        given = "priority" in node or isinstance(spec, dict) and "priority" in spec  # else refused already
        if merged["priority"] is None and not given:
            reader.error(key_line, join(key_path, "priority"),
                         f"no priority given and none of level medium declared to default to; set priority "
                         f"(one of {', '.join(priorities)})")
        if band is None or merged["priority"] is None:
            continue
        behaviour = _shared_behaviour(merged["priority"], merged["on_delay"] or 0.0, merged["off_delay"] or 0.0,
                                      bool(merged["latching"]), merged["realarm"] or 0.0, merged["description"] or "",
                                      merged["class"] == "highly_managed")
        limits.append(LimitAlarm(level, own["value"], band, behaviour, key_line))
        setpoints[key] = (own["value"], key_line)
    ordered = [(key, setpoints[key]) for key in ("ll", "l", "h", "hh") if key in setpoints]
    if not ordered and len(reader.issues) == issues_before:
        reader.error(line, path, "no limit given: set at least one of hh, h, l, ll")
    for (lower_key, (lower, _)), (upper_key, (upper, upper_line)) in zip(ordered, ordered[1:]):
        if not lower < upper:
            reader.error(upper_line, join(path, upper_key),
                         f"limits must rise ll < l < h < hh, but {upper_key.upper()} {upper} is not above "
                         f"{lower_key.upper()} {lower}")
    if low is not None and high is not None:
        for key, (limit, key_line) in ordered:
            if not low <= limit <= high:
                reader.error(key_line, join(path, key),
                             f"{key.upper()} {limit} lies outside the range {low}..{high} and could never be reached")
    if len(reader.issues) != issues_before:
        return None
    return TagAlarmConfig(getattr(tag, "name", ""), tuple(limits), line)


# ------------------------------------------------------------------------------------- rules section

RULES_FIELDS = {
    "priorities": Field(_any, None, "priority name: level (critical, high, medium, low, info); "
                                    "default critical, high, medium, low"),
    "shelving": Field(_any, None, "max_duration"),
    "analytics": Field(_any, None, "chattering, stale, flood thresholds"),
    "alarms": Field(_any, None, "rate, deviation, discrete, quality and expression alarms"),
    "gas": Field(_any, None, "gas detector channels (GB/T 50493-2019)"),
    "suppression": Field(_any, None, "suppression by design"),
    "units": Field(_any, None, "production units: max_bypassed"),
    "interlocks": Field(_any, None, "interlocks whose bypass state is supervised"),
    "bypass_priorities": Field(_any, None, "priority of each bypass, trip and final-element event"),
    "trip_history": Field(_any, None, "history kept around every interlock trip: before, after, interval; or off"),
    "bad_pv": Field(_any, None, "the bad-PV alarm TAG.BADPV of every alarmed tag: priority, delays, per-tag settings"),
}

TRIP_WINDOW_MAX = 600.0  # seconds before or after a trip: the ring holds the interlocks' tags for this long
TRIP_HISTORY_FIELDS = {
    "before": Field(lambda value: _at_most(duration(value), TRIP_WINDOW_MAX, "the history ring is bounded"), 60.0,
                    "history kept from this long before a trip; at most 10m"),
    "after": Field(lambda value: _at_most(duration(value), TRIP_WINDOW_MAX, "the history ring is bounded"), 30.0,
                   "... to this long after it (the trip_history event follows then); at most 10m"),
}
TRIP_INTERVAL_FIELD = {"interval": Field(lambda value: _at_least(positive_duration(value), 0.1), 1.0,
                                         "one history sample of every interlock tag this often; at least 0.1s")}
CONSEQUENTIAL_MAX = 24 * 3600.0

ANALYTICS_FIELDS = {
    "chatter_count": Field(integer(2, 1000), 3, "activations within chatter_window that make an alarm chattering"),
    "chatter_window": Field(positive_duration, 60.0, "the window chatter_count is counted in"),
    "stale_after": Field(positive_duration, 86400.0, "active this long: a stale alarm"),
    "flood_start": Field(integer(1, 100000), 10, "more than this many alarms within flood_window start a flood"),
    "flood_end": Field(integer(1, 100000), 5, "fewer than this many end it"),
    "flood_window": Field(lambda value: _at_most(positive_duration(value), FLOOD_WINDOW_MAX,
                                                 "alarms are kept for flood counting for one hour"),
                          600.0, "the window flood_start and flood_end are counted in; at most 1h"),
    "report_interval": Field(duration, 3600.0, "alarm-rate summary event; 0: never"),
    "shelved_report_interval": Field(duration, 3600.0, "report of shelved, suppressed and out-of-service alarms "
                                                       "with their occurrences while hidden; 0: never"),
}

SHELVING_FIELDS = {"max_duration": Field(positive_duration, 8 * 3600.0, "no shelf may be longer"),
                   "highly_managed_max": Field(positive_duration, 8 * 3600.0,
                                               "longest authorized shelf or out of service of a highly managed "
                                               "alarm")}

COMMON_RULE_FIELDS = {
    "id": Field(identifier, doc="alarm id, unique among all alarms"),
    "for": Field(duration, None, "alias of on_delay"),
    "suppressed_when": Field(_any, None, "expression: while true, the alarm is suppressed by design (DSUPR)"),
}


def _rule_kind_fields(tags: Mapping[str, Any]) -> dict[str, dict[str, Field]]:
    tag = _tag_ref(tags)
    return {
        "rate": {
            "tag": Field(tag, doc="the tag whose rate of change is watched"),
            "limit": Field(positive_number, doc="engineering units per second or minute"),
            "per": Field(one_of("second", "minute"), "minute", "the limit is per second or per minute"),
            "window": Field(positive_duration, 60.0, "the rate is measured over this window"),
            "direction": Field(one_of("both", "rise", "fall"), "both", "rise: only a rising rate alarms"),
            "deadband": Field(number(0.0), 0.0, "in the rate's units"),
        },
        "deviation": {
            "tag": Field(tag, doc="the tag that must not deviate"),
            "reference": Field(tag, None, "the tag to compare with (or setpoint)"),
            "setpoint": Field(number(), None, "a fixed value to compare with (or reference)"),
            "limit": Field(positive_number, doc="alarm at this deviation or more, in engineering units"),
            "direction": Field(one_of("both", "high", "low"), "both", "high: tag above the reference"),
            "deadband": Field(number(0.0), 0.0, "return only when the deviation is below limit - deadband"),
        },
        "discrete": {
            "tag": Field(tag, doc="a boolean or enumerated tag"),
            "state": Field(_number_or_bool, None, "alarm while the tag equals this value"),
            "states": Field(_any, None, "or one of these values"),
        },
        "quality": {
            "tag": Field(tag, doc="the tag whose quality is watched"),
            "trigger": Field(one_of("bad", "bad_or_stale", "not_good"), "bad_or_stale",
                             "bad: quality >= 16; bad_or_stale: or STALE; not_good: anything but good"),
        },
    }


def parse_rules_section(node: Any, path: str, line: int, reader: Reader,
                        tag_names: Mapping[str, Any]) -> RulesConfig | None:
    """The top-level `rules:` section. `tag_names` maps every tag name to its TagConfig (or `TagInfo`):
    unit and range are used for gas checks, `alarms` (if present) for suppression patterns.
    Returns None when the section is absent or has issues (recorded in `reader`)."""
    if node is None:
        return None
    issues_before = len(reader.issues)
    top = reader.section(node, path, line, RULES_FIELDS)
    if top is None:
        return None
    def key_line(key: str) -> int:
        return Reader.key_line(node, key)

    priorities = _priorities(top["priorities"], join(path, "priorities"), key_line("priorities"), reader)
    shelving = reader.section(top["shelving"], join(path, "shelving"), key_line("shelving"), SHELVING_FIELDS) or {}
    analytics_values = reader.section(top["analytics"], join(path, "analytics"), key_line("analytics"),
                                      ANALYTICS_FIELDS)
    analytics = AnalyticsConfig()
    if analytics_values and len(analytics_values) == len(ANALYTICS_FIELDS):
        analytics = AnalyticsConfig(**analytics_values)
        if analytics.flood_end > analytics.flood_start:
            reader.error(key_line("analytics"), join(path, "analytics.flood_end"),
                         f"flood_end ({analytics.flood_end}) must not be above flood_start ({analytics.flood_start})")
    used_ids: dict[str, int] = {}
    for tag_name, info in tag_names.items():
        for level in _tag_limit_levels(getattr(info, "alarms", None)):
            used_ids[f"{tag_name}.{level}"] = getattr(info, "line", 0)
    alarms = _alarm_rules(top["alarms"], join(path, "alarms"), key_line("alarms"), reader, tag_names, priorities,
                          used_ids)
    gas = _gas_channels(top["gas"], join(path, "gas"), key_line("gas"), reader, tag_names, priorities, used_ids)
    limit_tags = [name for name, info in tag_names.items() if _tag_limit_levels(getattr(info, "alarms", None))]
    bad_pv = _bad_pv(top["bad_pv"], join(path, "bad_pv"), key_line("bad_pv"), reader, priorities,
                     set(alarmed_tags(limit_tags, alarms, gas)))
    gas_tags = {channel.tag for channel in gas}
    for tag in bad_pv_tags(limit_tags, alarms, gas, bad_pv):
        alarm_id = f"{tag}{BAD_PV_SUFFIX}"
        if alarm_id in used_ids:
            reader.error(used_ids[alarm_id], path, f"alarm id {alarm_id!r} is the bad-PV alarm of tag {tag}; "
                                                   f"rename the alarm or turn it off in rules.bad_pv.tags")
        used_ids[alarm_id] = getattr(tag_names[tag], "line", 0)
    # a gas channel's bad-PV alarm is gas detection too: never suppressed by process state
    gas_ids = {f"{channel.tag}.GAS{level}" for channel in gas for level in (1, 2)} | \
        {f"{tag}{BAD_PV_SUFFIX}" for tag in gas_tags}
    suppressions = _suppressions(top["suppression"], join(path, "suppression"), key_line("suppression"), reader,
                                 tag_names, used_ids, gas_ids)
    units = _units(top["units"], join(path, "units"), key_line("units"), reader)
    trip_history = _trip_history(top["trip_history"], join(path, "trip_history"), key_line("trip_history"), reader,
                                 TripHistory(), TRIP_INTERVAL_FIELD)
    interlocks = _interlocks(top["interlocks"], join(path, "interlocks"), key_line("interlocks"), reader, tag_names,
                             units, used_ids, gas_ids)
    bypass_priorities = _bypass_priorities(top["bypass_priorities"], join(path, "bypass_priorities"),
                                           key_line("bypass_priorities"), reader, priorities,
                                           (key_line("priorities"), join(path, "priorities")))
    if len(reader.issues) != issues_before:
        return None
    return RulesConfig(priorities=priorities, shelving_max=shelving.get("max_duration", 8 * 3600.0),
                       highly_managed_max=shelving.get("highly_managed_max", 8 * 3600.0),
                       analytics=analytics, alarms=alarms, gas=gas, suppressions=suppressions, units=units,
                       interlocks=interlocks, bypass_priorities=bypass_priorities, trip_history=trip_history,
                       bad_pv=bad_pv)


def _bad_pv_fields(priorities: Mapping[str, int]) -> dict[str, Field]:
    return {
        "priority": Field(_priority(priorities), default_priority(priorities, "medium"),
                          "of TAG.BADPV; default medium (or the first priority of level medium)"),
        "gas_priority": Field(_optional(_priority(priorities)), None,
                              "of a gas channel's TAG.BADPV (fault, inhibit, calibration); default its level 1 "
                              "priority"),
        "on_delay": Field(duration, 0.0, "raise only when the value was bad this long"),
        "off_delay": Field(duration, 10.0, "report the return only when good this long (no chattering on a "
                                           "flickering input)"),
        "trigger": Field(one_of("bad", "bad_or_stale"), "bad", "bad: quality >= 16; bad_or_stale: or STALE"),
        "tags": Field(_any, None, "TAG: {priority, on_delay, off_delay}, or {enabled: false, reason: why}"),
    }


def _bad_pv_tag_fields(priorities: Mapping[str, int]) -> dict[str, Field]:
    return {
        "enabled": Field(boolean, True, "false: no TAG.BADPV for this tag (needs reason)"),
        "reason": Field(_optional(text), None, "why this tag has no bad-PV alarm"),
        "priority": Field(_optional(_priority(priorities)), None, "this tag's TAG.BADPV priority"),
        "on_delay": Field(_optional(duration), None, "this tag's on-delay"),
        "off_delay": Field(_optional(duration), None, "this tag's off-delay"),
    }


def _bad_pv(node: Any, path: str, line: int, reader: Reader, priorities: Mapping[str, int],
            alarmed: set[str]) -> BadPvConfig:
    values = reader.section(node, path, line, _bad_pv_fields(priorities))
    if values is None or values.get("priority") is None or len(values) != len(_bad_pv_fields(priorities)):
        return BadPvConfig()
    tags_node = values["tags"]
    per_tag: dict[str, BadPvTag] = {}
    if tags_node is not None and not isinstance(tags_node, dict):
        reader.error(Reader.key_line(node, "tags"), join(path, "tags"), "expected a mapping of tag name to settings")
        tags_node = None
    for tag, item in (tags_node or {}).items():
        item_path, item_line = join(join(path, "tags"), tag), Reader.key_line(tags_node, tag)
        if tag not in alarmed:
            reader.error(item_line, item_path, f"tag {tag!r} has no alarm (limits, gas channel, rate, deviation or "
                                               f"discrete rule); a bad-PV alarm comes with a tag's alarms")
            continue
        own = reader.section(item, item_path, item_line, _bad_pv_tag_fields(priorities))
        if own is None or len(own) != len(_bad_pv_tag_fields(priorities)):
            continue
        if not own["enabled"] and not own["reason"]:
            reader.error(item_line, join(item_path, "reason"),
                         f"turning off the bad-PV alarm of {tag} needs a reason (it is recorded with the config)")
            continue
        per_tag[tag] = BadPvTag(own["enabled"], own["reason"] or "", own["priority"], own["on_delay"], own["off_delay"])
    return BadPvConfig(values["priority"], values["gas_priority"], values["on_delay"], values["off_delay"],
                       values["trigger"], per_tag)


def _bypass_priorities(node: Any, path: str, line: int, reader: Reader, priorities: Mapping[str, int],
                       declared_at: tuple[int, str]) -> dict[str, str]:
    """The priority of each bypass event: as given, else its default level resolved by `default_priority`;
    a default level that no declared priority has is refused here, not found missing at the first bypass."""
    fields = {event: Field(_priority(priorities), None) for event in BYPASS_EVENTS}
    given = (reader.section(node, path, line, fields) or {}) if node is not None else {}
    result = {}
    for event in BYPASS_EVENTS:
        chosen = given.get(event) or default_priority(priorities, DEFAULT_BYPASS_PRIORITIES[event])
        if chosen is None and not (isinstance(node, dict) and event in node):
            reader.error(*declared_at, f"bypass event {event} defaults to a priority of level "
                                       f"{DEFAULT_BYPASS_PRIORITIES[event]} and none is declared; declare one or set "
                                       f"rules.bypass_priorities.{event}")
        result[event] = chosen
    return result


def _tag_limit_levels(alarms: Any) -> list[str]:
    if alarms is None:
        return []
    if hasattr(alarms, "limits"):
        return [limit.level for limit in alarms.limits]
    return [level for level in LIMIT_LEVELS if getattr(alarms, level.lower(), None) is not None]


def _priorities(node: Any, path: str, line: int, reader: Reader) -> dict[str, int]:
    if node is None:
        return dict(DEFAULT_PRIORITIES)
    if not isinstance(node, dict) or not node:
        reader.error(line, path, "expected a mapping of priority name to level (critical, high, medium, low, info)")
        return dict(DEFAULT_PRIORITIES)
    result = {}
    for key, value in node.items():
        key_line = Reader.key_line(node, key)
        try:
            name = identifier(key)
        except Invalid as exc:
            reader.error(key_line, join(path, key), str(exc))
            continue
        if value not in PRIORITY_LEVELS:
            reader.error(key_line, join(path, key),
                         f"{value!r} is not a level; one of: {', '.join(PRIORITY_LEVELS)}")
            continue
        result[name] = PRIORITY_LEVELS[value]
    if len(set(result.values()) & {2, 3, 1}) < 3 and len(result) == len(node):
        reader.error(line, path, "declare at least a high, a medium and a low priority")
    return result or dict(DEFAULT_PRIORITIES)


def _behaviour(values: dict[str, Any], reader: Reader, node: Any, path: str,
               tags: Mapping[str, Any]) -> AlarmBehaviour | None:
    if values.get("for") is not None and values.get("on_delay") is not None:
        reader.error(Reader.key_line(node, "for"), join(path, "for"), "give either for or on_delay, not both")
        return None
    suppressed = None
    if values.get("suppressed_when") is not None:
        try:
            suppressed = parse_expression(values["suppressed_when"], tags)
        except ExpressionError as exc:
            reader.error(Reader.key_line(node, "suppressed_when"), join(path, "suppressed_when"),
                         f"bad expression {values['suppressed_when']!r}: {exc}")
            return None
    if values.get("priority") is None:
        return None  # refused already: not a priority, or no medium level to default to (rules.priorities)
    on_delay = values.get("for") if values.get("for") is not None else values.get("on_delay")
    return AlarmBehaviour(priority=values["priority"], on_delay=on_delay or 0.0,
                          off_delay=values.get("off_delay") or 0.0, latching=bool(values.get("latching")),
                          realarm=values.get("realarm") or 0.0, suppressed_when=suppressed,
                          description=values.get("description") or "",
                          highly_managed=values.get("class") == "highly_managed")


def _alarm_rules(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                 priorities: Mapping[str, int], used_ids: dict[str, int]) -> tuple[AlarmRule, ...]:
    kinds = _rule_kind_fields(tags)
    result = []
    for item, item_path, item_line in reader.items(node, path, line):
        if not isinstance(item, dict):
            reader.error(item_line, item_path, "expected a mapping with id and one of: rate, deviation, discrete, "
                                               "quality, when")
            continue
        present = [key for key in ("rate", "deviation", "discrete", "quality", "when") if key in item]
        if len(present) != 1:
            reader.error(item_line, item_path, ("an alarm has exactly one of rate, deviation, discrete, quality, "
                                                "when; found " + (", ".join(present) or "none")))
            continue
        kind = present[0]
        fields = {**COMMON_RULE_FIELDS, **_behaviour_fields(priorities, default_priority(priorities, "medium")),
                  kind: Field(_expression(tags) if kind == "when" else _any)}
        values = reader.section(item, item_path, item_line, fields)
        if values is None or "id" not in values or kind not in values:
            continue
        alarm_id = values["id"]
        if alarm_id in used_ids:
            reader.error(Reader.key_line(item, "id"), join(item_path, "id"),
                         f"alarm id {alarm_id!r} is already used (line {used_ids[alarm_id]})")
            continue
        used_ids[alarm_id] = item_line
        behaviour = _behaviour(values, reader, item, item_path, tags)
        spec = _rule_spec(kind, values[kind], join(item_path, kind), Reader.key_line(item, kind), reader, kinds)
        if behaviour is not None and spec is not None:
            result.append(AlarmRule(alarm_id, spec, behaviour, item_line))
    return tuple(result)


def _rule_spec(kind: str, node: Any, path: str, line: int, reader: Reader, kinds: dict[str, dict[str, Field]]) -> Any:
    if kind == "when":
        return ExpressionSpec(node)
    values = reader.section(node, path, line, kinds[kind])
    if values is None or len(values) != len(kinds[kind]):
        return None
    if kind == "rate":
        return RateSpec(values["tag"], values["limit"], 60.0 if values["per"] == "minute" else 1.0, values["window"],
                        values["direction"], values["deadband"])
    if kind == "deviation":
        if (values["reference"] is None) == (values["setpoint"] is None):
            reader.error(line, path, "give exactly one of reference (a tag) or setpoint (a number)")
            return None
        return DeviationSpec(values["tag"], values["limit"], values["reference"], values["setpoint"],
                             values["direction"], values["deadband"])
    if kind == "discrete":
        if (values["state"] is None) == (values["states"] is None):
            reader.error(line, path, "give exactly one of state (a value) or states (a list of values)")
            return None
        if values["states"] is not None:
            if not isinstance(values["states"], list) or not values["states"]:
                reader.error(Reader.key_line(node, "states"), join(path, "states"), "expected a non-empty list")
                return None
            try:
                states = tuple(_number_or_bool(state) for state in values["states"])
            except Invalid as exc:
                reader.error(Reader.key_line(node, "states"), join(path, "states"), str(exc))
                return None
        else:
            states = (values["state"],)
        return DiscreteSpec(values["tag"], states)
    return QualitySpec(values["tag"], values["trigger"])


GAS_FIELDS_DOC = "tag, type, gas, level1, level2, oel, idlh, range_limited"


def _oel_unit(value: Any) -> str:
    spelled = value.replace("³", "3") if isinstance(value, str) else value
    return one_of(*GAS_OEL_UNITS)(spelled)


def _gas_fields(tags: Mapping[str, Any], priorities: Mapping[str, int]) -> dict[str, Field]:
    ranked = ranked_priorities(priorities) or [""]
    return {
        "tag": Field(_tag_ref(tags), doc="the concentration tag (unit %LEL or ppm)"),
        "type": Field(one_of(*GAS_TYPES), doc="combustible (%LEL) or toxic (ppm)"),
        "gas": Field(text, "", "e.g. methane, H2S"),
        "level1": Field(number(0.0), doc="level 1 (low) alarm setpoint"),
        "level2": Field(number(0.0), doc="level 2 (high) alarm setpoint"),
        "oel": Field(_optional(positive_number), None, "toxic: occupational exposure limit, in oel_unit"),
        "oel_unit": Field(_oel_unit, "ppm", "ppm, or mg/m3 (converted to ppm at 25 °C with molar_mass)"),
        "oel_kind": Field(_optional(one_of(*OEL_KINDS)), None, "which OEL it is: MAC, PC-STEL or PC-TWA (GBZ 2.1)"),
        "molar_mass": Field(_optional(positive_number), None, "g/mol of the gas; needed for an OEL in mg/m3"),
        "idlh": Field(_optional(positive_number), None, "toxic: immediately dangerous to life or health, ppm"),
        "range_limited": Field(boolean, False, "toxic: the detector range cannot reach 200 % OEL"),
        "deadband": Field(number(0.0), 0.0, "return only below the setpoint by this much; below level1"),
        "level1_priority": Field(_priority(priorities), ranked[1] if len(ranked) > 1 else ranked[0],
                                 "priority of TAG.GAS1; default the second-highest declared"),
        "level2_priority": Field(_priority(priorities), ranked[0],
                                 "priority of TAG.GAS2; default the highest declared; never below level 1"),
        "on_delay": Field(duration, 0.0, f"raise only when the level held this long; at most {ON_DELAY_MAX:g}s"),
        "off_delay": Field(duration, 0.0, "report the return only when clear this long"),
        "latching": Field(boolean, False, "stay in alarm until reset by an operator"),
        "realarm": Field(duration, 0.0, "acknowledged and still active this long: unacknowledged again"),
        "description": Field(text, "", "shown with the alarms' events"),
        "level1_class": Field(one_of(*ALARM_CLASSES), "standard", "class of TAG.GAS1"),
        "level2_class": Field(one_of(*ALARM_CLASSES), "highly_managed",
                              "class of TAG.GAS2: highly managed unless set to standard"),
    }


def _norm_unit(unit: str) -> str:
    return unit.replace(" ", "").lower()


def _gas_channels(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                  priorities: Mapping[str, int], used_ids: dict[str, int]) -> tuple[GasChannel, ...]:
    fields = _gas_fields(tags, priorities)
    result, seen = [], {}
    for item, item_path, item_line in reader.items(node, path, line):
        values = reader.section(item, item_path, item_line, fields)
        if values is None or len(values) != len(fields):
            continue
        tag = values["tag"]
        if tag in seen:
            reader.error(Reader.key_line(item, "tag"), join(item_path, "tag"),
                         f"gas channel {tag} is already declared at line {seen[tag]}")
            continue
        seen[tag] = item_line
        oel = _check_gas_channel(values, item, item_path, item_line, reader, tags[tag], priorities)
        for level in (1, 2):
            alarm_id = f"{tag}.GAS{level}"
            if alarm_id in used_ids:
                reader.error(item_line, item_path, f"alarm id {alarm_id!r} is already used (line {used_ids[alarm_id]})")
            used_ids[alarm_id] = item_line
        common = dict(on_delay=values["on_delay"], off_delay=values["off_delay"], latching=values["latching"],
                      realarm=values["realarm"], description=values["description"])
        result.append(GasChannel(tag, values["type"], values["gas"], values["level1"], values["level2"], oel,
                                 values["idlh"], values["range_limited"], values["deadband"],
                                 AlarmBehaviour(priority=values["level1_priority"],
                                                highly_managed=values["level1_class"] == "highly_managed", **common),
                                 AlarmBehaviour(priority=values["level2_priority"],
                                                highly_managed=values["level2_class"] == "highly_managed", **common),
                                 item_line,
                                 oel_kind=values["oel_kind"] or "",
                                 oel_as_given=(values["oel"], values["oel_unit"]) if values["oel"] is not None
                                 else None, molar_mass=values["molar_mass"]))
    return tuple(result)


def _check_gas_channel(values: Mapping[str, Any], item: Any, item_path: str, item_line: int, reader: Reader,
                       info: Any, priorities: Mapping[str, int]) -> float | None:
    """Refuse what GB/T 50493 or plain safety forbids, warn on the unusual; returns the OEL in ppm."""
    tag, gas_type = values["tag"], values["type"]

    def refuse(key: str, message: str) -> None:
        reader.error(Reader.key_line(item, key) if key in item else item_line, join(item_path, key), message)

    def flag(key: str, message: str) -> None:
        reader.warn(Reader.key_line(item, key) if key in item else item_line, join(item_path, key), message)

    _check_gas_unit(tag, gas_type, getattr(info, "unit", "") or "", refuse, flag)
    if gas_type == "combustible":
        for key in ("oel", "idlh", "oel_kind", "molar_mass"):
            if values[key] is not None:
                refuse(key, f"{key} applies to toxic gas only")
        if values["range_limited"]:
            refuse("range_limited", "range_limited applies to toxic gas only")
    oel = _oel_ppm(values, refuse, flag) if gas_type == "toxic" else None
    unconverted = values["oel"] is not None and oel is None  # refused by _oel_ppm already
    for key, message in () if unconverted else setpoint_problems(gas_type, values["level1"], values["level2"],
                                                                  oel, values["idlh"], values["range_limited"]):
        refuse(key, message)
    high = getattr(info, "range_high", None)
    if gas_type == "toxic" and values["range_limited"] and oel is not None and high is not None and high >= 2 * oel:
        refuse("range_limited", f"tag {tag} ranges up to {high:g} ppm, which reaches 200 % OEL ({2 * oel:g} ppm): "
                                f"the IDLH fallback of GB/T 50493-2019 does not apply")
    for key in ("level1", "level2"):
        if high is not None and values[key] > high:
            refuse(key, f"{key.replace('level', 'level ')} at {values[key]:g} is above the full scale of "
                        f"tag {tag} ({high:g} {GAS_UNITS[gas_type]}, its range_high): it could never sound")
    refusals, warnings = behaviour_problems(values["level1"], values["deadband"], values["on_delay"])
    for key, message in refusals:
        refuse(key, message)
    for key, message in warnings:
        flag(key, message)
    if priorities.get(values["level2_priority"], 0) < priorities.get(values["level1_priority"], 0):
        refuse("level2_priority", f"level 2 priority {values['level2_priority']} is below the level 1 priority "
                                  f"{values['level1_priority']}: the more dangerous level must not be less urgent")
    return oel


def _check_gas_unit(tag: str, gas_type: str, unit: str, refuse: Callable[[str, str], None],
                    flag: Callable[[str, str], None]) -> None:
    """A channel compares against %LEL or ppm setpoints: a tag in another unit, or a combustible one with
    none at all (a 0-100 reading could be %LEL, %VOL or mA), would compare unlike with unlike."""
    wanted = GAS_UNITS[gas_type]
    if unit and _norm_unit(unit) != _norm_unit(wanted):
        refuse("type", f"a {gas_type} channel reads {wanted}, but tag {tag} has unit {unit!r}; "
                       f"convert the reading to {wanted}")
    elif not unit and gas_type == "combustible":
        refuse("tag", f"tag {tag} has no unit; a combustible channel reads %LEL: set unit: \"%LEL\" on the tag "
                      f"(after checking the detector reports %LEL, not %VOL or mA)")
    elif not unit:
        flag("tag", f"tag {tag} has no unit; a toxic channel reads ppm: set unit: ppm on the tag")


def _oel_ppm(values: Mapping[str, Any], refuse: Callable[[str, str], None],
             flag: Callable[[str, str], None]) -> float | None:
    """The OEL in ppm: as given, or converted from mg/m³ with the molar mass (ppm = mg/m³ × 24.45 / M)."""
    oel = values["oel"]
    if oel is None:
        return None
    if values["oel_kind"] is None:
        flag("oel_kind", "which OEL is this (MAC, PC-STEL or PC-TWA)? set oel_kind so the record says")
    if values["oel_unit"] == "ppm":
        return oel
    if values["molar_mass"] is None:
        refuse("molar_mass", f"an OEL of {oel:g} mg/m3 needs the gas's molar_mass (g/mol) to become ppm "
                             f"(H2S: 34.08)")
        return None
    return mg_per_m3_to_ppm(oel, values["molar_mass"])


def _suppression_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {"id": Field(identifier, doc="names the suppression group"),
            "when": Field(_expression(tags), doc="while true, the alarms are DSUPR"),
            "alarms": Field(_any, doc="alarm ids or glob patterns such as PT1*.H*")}


def _suppressions(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                  used_ids: dict[str, int], gas_ids: AbstractSet[str]) -> tuple[Suppression, ...]:
    """Suppression groups; gas alarms are never suppressed by them (a pattern such as "*" skips them, one
    that matches nothing else is refused). Each group adds the alarm `ID.STATE_BAD`."""
    fields = _suppression_fields(tags)
    result, seen = [], set()
    for item, item_path, item_line in reader.items(node, path, line):
        values = reader.section(item, item_path, item_line, fields)
        if values is None or len(values) != len(fields):
            continue
        patterns = values["alarms"] if isinstance(values["alarms"], list) else [values["alarms"]]
        alarms_line = Reader.key_line(item, "alarms")
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            reader.error(alarms_line, join(item_path, "alarms"), "expected a list of alarm ids or patterns")
            continue
        for pattern in patterns:
            matched = [alarm_id for alarm_id in used_ids if fnmatch.fnmatchcase(alarm_id, pattern)]
            if not matched:
                close = difflib.get_close_matches(pattern, list(used_ids), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                reader.error(alarms_line, join(item_path, "alarms"), f"{pattern!r} matches no alarm{hint}")
            elif set(matched) <= gas_ids:
                reader.error(alarms_line, join(item_path, "alarms"),
                             f"{pattern!r} matches only gas alarms ({', '.join(sorted(matched))}): gas alarms are "
                             f"never suppressed by process state (GB/T 50493)")
        state_alarm = f"{values['id']}.STATE_BAD"
        if state_alarm in used_ids:
            reader.error(Reader.key_line(item, "id"), join(item_path, "id"),
                         f"the suppression's alarm id {state_alarm!r} is already used (line {used_ids[state_alarm]})")
        used_ids[state_alarm] = item_line
        if values["id"] in seen:
            reader.error(Reader.key_line(item, "id"), join(item_path, "id"), f"suppression {values['id']!r} twice")
        seen.add(values["id"])
        result.append(Suppression(values["id"], values["when"], tuple(patterns), item_line))
    return tuple(result)


UNIT_FIELDS = {"max_bypassed": Field(integer(0, 10000), doc="interlocks of this unit bypassed at once, at most"),
               "description": Field(text, "", "what the unit is")}


def _units(node: Any, path: str, line: int, reader: Reader) -> tuple[ProductionUnit, ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        reader.error(line, path, "expected a mapping of production unit name to {max_bypassed: N}")
        return ()
    result = []
    for name, item in node.items():
        item_line = Reader.key_line(node, name)
        values = reader.section(item, join(path, name), item_line, UNIT_FIELDS)
        if values is not None and "max_bypassed" in values:
            result.append(ProductionUnit(str(name), values["max_bypassed"], item_line))
    return tuple(result)


def _interlock_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {
        "id": Field(identifier, doc="interlock id; its in-service state goes upstream as tag IL.<id>"),
        "description": Field(text, "", "what the interlock does"),
        "unit": Field(text, doc="production unit, declared under rules.units"),
        "bypass": Field(_tag_list(tags), (), "tag(s) non-zero while bypassed"),
        "in_service": Field(_tag_list(tags), (), "tag(s) non-zero while in service"),
        "protects": Field(_tag_list(tags), (), "process tags the interlock protects"),
        "trip": Field(_expression(tags), None, "the trip condition, an expression over tags"),
        "max_bypass": Field(positive_duration, doc="longest allowed bypass; caps authorizations"),
        "bad_input_votes": Field(one_of("tripped", "healthy"), "tripped",
                                 "a vote() in trip counts a condition on a bad input as tripped or healthy"),
        "causes": Field(_any, None, "first-out inputs, a list of expressions; default: the top-level `or` "
                                    "operands of trip"),
        "history": Field(_any, None, "before, after: history kept around a trip (default rules.trip_history); "
                                     "or off"),
        "final_element": Field(_any, None, "tag, expect (an expression over tag), within: the element must act "
                                           "that soon after a trip"),
        "consequential": Field(_any, None, "alarms (ids or patterns, no gas alarms), for: suppressed by design "
                                           "that long after a trip"),
    }


def _final_element_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {"tag": Field(_tag_ref(tags), doc="the final element's feedback tag (valve position, run feedback)"),
            "expect": Field(_expression(tags), doc="true once the element acted, e.g. \"XV101_ZT < 5\""),
            "within": Field(positive_duration, doc="its response time: at most this long after the trip")}


CONSEQUENTIAL_FIELDS = {
    "alarms": Field(_any, doc="alarm ids or glob patterns of the unit's consequential alarms (never gas alarms)"),
    "for": Field(lambda value: _at_most(positive_duration(value), CONSEQUENTIAL_MAX, "a trip's consequences pass"),
                 doc="how long after the trip they stay suppressed by design; at most 24h"),
}


def _trip_history(node: Any, path: str, line: int, reader: Reader, default: TripHistory,
                  extra: dict[str, Field] | None = None) -> TripHistory:
    """`off` (or false), or a mapping of before/after (and, globally, interval); absent: `default`."""
    if node is None:
        return default
    if node is False or node == "off":
        return NO_TRIP_HISTORY
    fields = {key: Field(spec.convert, getattr(default, key), spec.doc)
              for key, spec in {**TRIP_HISTORY_FIELDS, **(extra or {})}.items()}
    values = reader.section(node, path, line, fields)
    if not values or len(values) != len(fields):
        return default
    return TripHistory(values["before"], values["after"], values.get("interval", default.interval))


def _interlocks(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                units: tuple[ProductionUnit, ...], alarm_ids: Mapping[str, int],
                gas_ids: AbstractSet[str]) -> tuple[Interlock, ...]:
    fields = _interlock_fields(tags)
    unit_names = {unit.name for unit in units}
    result, seen = [], {}
    for item, item_path, item_line in reader.items(node, path, line):
        values = reader.section(item, item_path, item_line, fields)
        if values is None or len(values) != len(fields):
            continue
        if not values["bypass"] and not values["in_service"]:
            reader.error(item_line, item_path, "an interlock needs its status tag(s): bypass or in_service")
            continue
        if values["unit"] not in unit_names:
            reader.error(Reader.key_line(item, "unit"), join(item_path, "unit"),
                         f"unit {values['unit']!r} is not declared under rules.units; add "
                         f"{values['unit']}: {{max_bypassed: N}} there")
            continue
        if values["id"] in seen:
            reader.error(Reader.key_line(item, "id"), join(item_path, "id"),
                         f"interlock {values['id']!r} is already declared at line {seen[values['id']]}")
            continue
        seen[values["id"]] = item_line
        capture = _trip_capture(item, item_path, values, reader, tags, alarm_ids, gas_ids)
        if capture is None:
            continue
        result.append(Interlock(values["id"], values["unit"], values["max_bypass"], values["bypass"],
                                values["in_service"], values["protects"], values["trip"], values["description"],
                                item_line, values["bad_input_votes"], **capture))
    return tuple(result)


def _trip_capture(item: Any, path: str, values: Mapping[str, Any], reader: Reader, tags: Mapping[str, Any],
                  alarm_ids: Mapping[str, int], gas_ids: AbstractSet[str]) -> dict[str, Any] | None:
    """causes, history, final_element, consequential of one interlock (all need its trip); None if invalid."""
    issues_before = len(reader.issues)
    def key_line(key: str) -> int:
        return Reader.key_line(item, key)

    if values["trip"] is None:
        for key in ("causes", "final_element", "consequential"):
            if values[key] is not None:
                reader.error(key_line(key), join(path, key), f"{key} needs the interlock's trip condition (trip:)")
        return None if len(reader.issues) != issues_before else {}
    causes: tuple = ()
    if values["causes"] is not None:
        convert = _expression(tags)
        found = []
        for cause, cause_path, cause_line in reader.items(values["causes"], join(path, "causes"), key_line("causes")):
            try:
                found.append(convert(cause))
            except Invalid as exc:
                reader.error(cause_line or key_line("causes"), cause_path, str(exc))
        causes = tuple(found)
        if not causes and len(reader.issues) == issues_before:
            reader.error(key_line("causes"), join(path, "causes"), "expected a non-empty list of expressions")
    history = None
    if values["history"] is not None:
        history = _trip_history(values["history"], join(path, "history"), key_line("history"), reader, TripHistory())
    final = None
    if values["final_element"] is not None:
        final_path = join(path, "final_element")
        got = reader.section(values["final_element"], final_path, key_line("final_element"),
                             _final_element_fields(tags))
        if got is not None and len(got) == 3:
            if got["tag"] not in got["expect"].tags:
                reader.error(key_line("final_element"), join(final_path, "expect"),
                             f"expect must read the final element's tag {got['tag']}, e.g. \"{got['tag']} < 5\"")
            else:
                final = FinalElement(got["tag"], got["expect"], got["within"])
    consequential = None
    if values["consequential"] is not None:
        conseq_path = join(path, "consequential")
        got = reader.section(values["consequential"], conseq_path, key_line("consequential"), CONSEQUENTIAL_FIELDS)
        if got is not None and len(got) == 2:
            patterns = got["alarms"] if isinstance(got["alarms"], list) else [got["alarms"]]
            alarms_line = Reader.key_line(values["consequential"], "alarms")
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                reader.error(alarms_line, join(conseq_path, "alarms"), "expected a list of alarm ids or patterns")
            else:
                for pattern in patterns:
                    gas = sorted(alarm for alarm in gas_ids if fnmatch.fnmatchcase(alarm, pattern))
                    if gas:
                        reader.error(alarms_line, join(conseq_path, "alarms"),
                                     f"{pattern!r} matches gas alarms ({', '.join(gas)}): gas alarms are never "
                                     f"suppressed by process state (GB/T 50493); list the process alarms only")
                    elif not any(fnmatch.fnmatchcase(alarm, pattern) for alarm in alarm_ids):
                        close = difflib.get_close_matches(pattern, list(alarm_ids), n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else ""
                        reader.error(alarms_line, join(conseq_path, "alarms"), f"{pattern!r} matches no alarm{hint}")
                consequential = ConsequentialSuppression(tuple(patterns), got["for"])
    if len(reader.issues) != issues_before:
        return None
    return {"causes": causes, "history": history, "final_element": final, "consequential": consequential}


def reference_sections() -> list[tuple[str, dict[str, Field]]]:
    """The key tables of the rules configuration, for `gatewayd.config.reference` (docs/configuration.md)."""
    priorities = dict(DEFAULT_PRIORITIES)
    kinds = _rule_kind_fields({})
    return [
        ("devices[].tags[].alarms", tag_alarm_fields(tuple(priorities))),
        ("devices[].tags[].alarms.hh / h / l / ll (as a mapping)", _limit_fields(tuple(priorities))),
        ("rules", RULES_FIELDS),
        ("rules.shelving", SHELVING_FIELDS),
        ("rules.analytics", ANALYTICS_FIELDS),
        ("rules.alarms[] (every kind)", {**COMMON_RULE_FIELDS, **_behaviour_fields(priorities, "medium")}),
        ("rules.alarms[]: the kind, exactly one of", {
            "rate": Field(_any, None, "rate of change of a tag (rules.alarms[].rate)"),
            "deviation": Field(_any, None, "a tag against another tag or a setpoint (rules.alarms[].deviation)"),
            "discrete": Field(_any, None, "a boolean or enumerated tag in a given state (rules.alarms[].discrete)"),
            "quality": Field(_any, None, "a tag without a good value (rules.alarms[].quality)"),
            "when": Field(_any, None, "an expression over tags, e.g. \"PT101 > 1.2 and not XV103\" (docs/rules.md)"),
        }),
        *((f"rules.alarms[].{kind}", fields) for kind, fields in kinds.items()),
        ("rules.gas[]", _gas_fields({}, priorities)),
        ("rules.suppression[]", _suppression_fields({})),
        ("rules.units.NAME", UNIT_FIELDS),
        ("rules.interlocks[]", _interlock_fields({})),
        ("rules.interlocks[].final_element", _final_element_fields({})),
        ("rules.interlocks[].consequential", CONSEQUENTIAL_FIELDS),
        ("rules.interlocks[].history (or off)", TRIP_HISTORY_FIELDS),
        ("rules.trip_history (or off)", {**TRIP_HISTORY_FIELDS, **TRIP_INTERVAL_FIELD}),
        ("rules.bad_pv", _bad_pv_fields(priorities)),
        ("rules.bad_pv.tags.TAG", _bad_pv_tag_fields(priorities)),
        ("rules.bypass_priorities", {event: Field(_any, DEFAULT_BYPASS_PRIORITIES[event], f"priority of {event} events")
                                     for event in BYPASS_EVENTS}),
    ]
