"""The rules configuration: per-tag `alarms:` blocks and the top-level `rules:` section.

Validated with the `core.schema` toolkit: every issue is collected with file, line and key
path; nothing is repaired. Called by `gatewayd.config.load`:

    alarms = parse_tag_alarms(tag_node.get("alarms"), f"{path}.alarms", line, reader, tag_config,
                              priorities=priority_names(document.get("rules")))  # rules.config_fields
    rules = parse_rules_section(document.get("rules"), "rules", line, reader, {tag.name: tag ...})

Both return frozen objects (`rules.model`), or None when the block is absent or invalid (the reader
then holds the issues). See docs/rules.md for the YAML shape. The larger sections have modules of their
own: `rules.gas_config` (gas channels), `rules.interlock_config` (units, interlocks, trip capture), and
the field converters they share are in `rules.config_fields`.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from core.schema import positive_duration
from core.schema import (
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
from rules.config_fields import (
    ALARM_CLASSES,
    FLOOD_WINDOW_MAX,
    PERCENT,
    any_value,
    at_most,
    deadband_value,
    expression_of,
    number_or_bool,
    optional_of,
    positive_number,
    priority_of,
    tag_ref,
)
from rules.expr import ExpressionError, parse_expression
from rules.gas_config import gas_channels, gas_fields
from rules.interlock_config import (
    CONSEQUENTIAL_FIELDS,
    TRIP_HISTORY_FIELDS,
    TRIP_INTERVAL_FIELD,
    UNIT_FIELDS,
    final_element_fields,
    interlock_fields,
    parse_interlocks,
    parse_trip_history,
    parse_units,
)
from rules.model import (
    BAD_PV_SUFFIX,
    BYPASS_EVENTS,
    DEFAULT_BYPASS_PRIORITIES,
    DEFAULT_PRIORITIES,
    LIMIT_LEVELS,
    PRIORITY_LEVELS,
    AlarmBehaviour,
    AlarmRule,
    AnalyticsConfig,
    BadPvConfig,
    BadPvTag,
    DeviationSpec,
    DiscreteSpec,
    ExpressionSpec,
    LimitAlarm,
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

def _behaviour_fields(priorities: Iterable[str], priority_default: str | None) -> dict[str, Field]:
    return {
        "priority": Field(priority_of(priorities), priority_default,
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
def limit_fields(priorities: tuple[str, ...]) -> dict[str, Field]:
    return {"value": Field(number(), doc="the limit, in engineering units"),
            "deadband": Field(deadband_value, None, "engineering units or N% of range"),
            **_behaviour_fields(priorities, None)}


@functools.cache
def tag_alarm_fields(priorities: tuple[str, ...] = tuple(DEFAULT_PRIORITIES),
                     priority_default: str | None = "medium") -> dict[str, Field]:
    fields = {key: Field(any_value, None, f"{key.upper()} limit: a number or a mapping with value, deadband, "
                                     f"on_delay, off_delay, priority, ...") for key in ("hh", "h", "l", "ll")}
    fields["deadband"] = Field(deadband_value, 0.0, "for every limit: engineering units or N% of range")
    fields.update(_behaviour_fields(priorities, priority_default))
    fields["suppressed_when"] = Field(any_value, None, "set under rules.suppression instead")
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
        return float(PERCENT.match(value).group(1)) / 100.0 * (high - low)

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
            own = reader.section(spec, key_path, key_line, limit_fields(priorities))
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
    "priorities": Field(any_value, None, "priority name: level (critical, high, medium, low, info); "
                                    "default critical, high, medium, low"),
    "shelving": Field(any_value, None, "max_duration"),
    "analytics": Field(any_value, None, "chattering, stale, flood thresholds"),
    "alarms": Field(any_value, None, "rate, deviation, discrete, quality and expression alarms"),
    "gas": Field(any_value, None, "gas detector channels (GB/T 50493-2019)"),
    "suppression": Field(any_value, None, "suppression by design"),
    "units": Field(any_value, None, "production units: max_bypassed"),
    "interlocks": Field(any_value, None, "interlocks whose bypass state is supervised"),
    "bypass_priorities": Field(any_value, None, "priority of each bypass, trip and final-element event"),
    "trip_history": Field(any_value, None,
                          "history kept around every interlock trip: before, after, interval; or off"),
    "bad_pv": Field(any_value, None,
                    "the bad-PV alarm TAG.BADPV of every alarmed tag: priority, delays, per-tag settings"),
}


ANALYTICS_FIELDS = {
    "chatter_count": Field(integer(2, 1000), 3, "activations within chatter_window that make an alarm chattering"),
    "chatter_window": Field(positive_duration, 60.0, "the window chatter_count is counted in"),
    "stale_after": Field(positive_duration, 86400.0, "active this long: a stale alarm"),
    "flood_start": Field(integer(1, 100000), 10, "more than this many alarms within flood_window start a flood"),
    "flood_end": Field(integer(1, 100000), 5, "fewer than this many end it"),
    "flood_window": Field(lambda value: at_most(positive_duration(value), FLOOD_WINDOW_MAX,
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
    "suppressed_when": Field(any_value, None, "expression: while true, the alarm is suppressed by design (DSUPR)"),
}


def _rule_kind_fields(tags: Mapping[str, Any]) -> dict[str, dict[str, Field]]:
    tag = tag_ref(tags)
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
            "state": Field(number_or_bool, None, "alarm while the tag equals this value"),
            "states": Field(any_value, None, "or one of these values"),
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
    gas = gas_channels(top["gas"], join(path, "gas"), key_line("gas"), reader, tag_names, priorities, used_ids)
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
    units = parse_units(top["units"], join(path, "units"), key_line("units"), reader)
    trip_history = parse_trip_history(top["trip_history"], join(path, "trip_history"), key_line("trip_history"),
                                      reader, TripHistory(), TRIP_INTERVAL_FIELD)
    interlocks = parse_interlocks(top["interlocks"], join(path, "interlocks"), key_line("interlocks"), reader,
                                  tag_names, units, used_ids, gas_ids)
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
        "priority": Field(priority_of(priorities), default_priority(priorities, "medium"),
                          "of TAG.BADPV; default medium (or the first priority of level medium)"),
        "gas_priority": Field(optional_of(priority_of(priorities)), None,
                              "of a gas channel's TAG.BADPV (fault, inhibit, calibration); default its level 1 "
                              "priority"),
        "on_delay": Field(duration, 0.0, "raise only when the value was bad this long"),
        "off_delay": Field(duration, 10.0, "report the return only when good this long (no chattering on a "
                                           "flickering input)"),
        "trigger": Field(one_of("bad", "bad_or_stale"), "bad", "bad: quality >= 16; bad_or_stale: or STALE"),
        "tags": Field(any_value, None, "TAG: {priority, on_delay, off_delay}, or {enabled: false, reason: why}"),
    }


def _bad_pv_tag_fields(priorities: Mapping[str, int]) -> dict[str, Field]:
    return {
        "enabled": Field(boolean, True, "false: no TAG.BADPV for this tag (needs reason)"),
        "reason": Field(optional_of(text), None, "why this tag has no bad-PV alarm"),
        "priority": Field(optional_of(priority_of(priorities)), None, "this tag's TAG.BADPV priority"),
        "on_delay": Field(optional_of(duration), None, "this tag's on-delay"),
        "off_delay": Field(optional_of(duration), None, "this tag's off-delay"),
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
    fields = {event: Field(priority_of(priorities), None) for event in BYPASS_EVENTS}
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
                  kind: Field(expression_of(tags) if kind == "when" else any_value)}
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
                states = tuple(number_or_bool(state) for state in values["states"])
            except Invalid as exc:
                reader.error(Reader.key_line(node, "states"), join(path, "states"), str(exc))
                return None
        else:
            states = (values["state"],)
        return DiscreteSpec(values["tag"], states)
    return QualitySpec(values["tag"], values["trigger"])


def _suppression_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {"id": Field(identifier, doc="names the suppression group"),
            "when": Field(expression_of(tags), doc="while true, the alarms are DSUPR"),
            "alarms": Field(any_value, doc="alarm ids or glob patterns such as PT1*.H*")}


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


def reference_sections() -> list[tuple[str, dict[str, Field]]]:
    """The key tables of the rules configuration, for `gatewayd.config.reference` (docs/configuration.md)."""
    priorities = dict(DEFAULT_PRIORITIES)
    kinds = _rule_kind_fields({})
    return [
        ("devices[].tags[].alarms", tag_alarm_fields(tuple(priorities))),
        ("devices[].tags[].alarms.hh / h / l / ll (as a mapping)", limit_fields(tuple(priorities))),
        ("rules", RULES_FIELDS),
        ("rules.shelving", SHELVING_FIELDS),
        ("rules.analytics", ANALYTICS_FIELDS),
        ("rules.alarms[] (every kind)", {**COMMON_RULE_FIELDS, **_behaviour_fields(priorities, "medium")}),
        ("rules.alarms[]: the kind, exactly one of", {
            "rate": Field(any_value, None, "rate of change of a tag (rules.alarms[].rate)"),
            "deviation": Field(any_value, None,
                               "a tag against another tag or a setpoint (rules.alarms[].deviation)"),
            "discrete": Field(any_value, None,
                              "a boolean or enumerated tag in a given state (rules.alarms[].discrete)"),
            "quality": Field(any_value, None,
                             "a tag without a good value (rules.alarms[].quality)"),
            "when": Field(any_value, None,
                          "an expression over tags, e.g. \"PT101 > 1.2 and not XV103\" (docs/rules.md)"),
        }),
        *((f"rules.alarms[].{kind}", fields) for kind, fields in kinds.items()),
        ("rules.gas[]", gas_fields({}, priorities)),
        ("rules.suppression[]", _suppression_fields({})),
        ("rules.units.NAME", UNIT_FIELDS),
        ("rules.interlocks[]", interlock_fields({})),
        ("rules.interlocks[].final_element", final_element_fields({})),
        ("rules.interlocks[].consequential", CONSEQUENTIAL_FIELDS),
        ("rules.interlocks[].history (or off)", TRIP_HISTORY_FIELDS),
        ("rules.trip_history (or off)", {**TRIP_HISTORY_FIELDS, **TRIP_INTERVAL_FIELD}),
        ("rules.bad_pv", _bad_pv_fields(priorities)),
        ("rules.bad_pv.tags.TAG", _bad_pv_tag_fields(priorities)),
        ("rules.bypass_priorities", {event: Field(any_value, DEFAULT_BYPASS_PRIORITIES[event],
                                                  f"priority of {event} events")
                                     for event in BYPASS_EVENTS}),
    ]
