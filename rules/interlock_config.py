"""The `rules.units`, `rules.interlocks` and `rules.trip_history` sections: production units, interlocks
with their bypass and trip conditions, and what a trip demand captures (values, history, the final
element's response, consequential suppression).

    units = parse_units(node, "rules.units", line, reader)
    interlocks = parse_interlocks(node, "rules.interlocks", line, reader, tags, units, used_ids, gas_ids)
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from core.schema import (
    Field,
    Invalid,
    Reader,
    duration,
    identifier,
    integer,
    join,
    one_of,
    positive_duration,
    text,
)
from rules.config_fields import any_value, at_least, at_most, expression_of, tag_list, tag_ref
from rules.model import NO_TRIP_HISTORY, ConsequentialSuppression, FinalElement, Interlock, ProductionUnit, TripHistory

TRIP_WINDOW_MAX = 600.0  # seconds before or after a trip: the ring holds the interlocks' tags for this long
TRIP_HISTORY_FIELDS = {
    "before": Field(lambda value: at_most(duration(value), TRIP_WINDOW_MAX, "the history ring is bounded"), 60.0,
                    "history kept from this long before a trip; at most 10m"),
    "after": Field(lambda value: at_most(duration(value), TRIP_WINDOW_MAX, "the history ring is bounded"), 30.0,
                   "... to this long after it (the trip_history event follows then); at most 10m"),
}
TRIP_INTERVAL_FIELD = {"interval": Field(lambda value: at_least(positive_duration(value), 0.1), 1.0,
                                         "one history sample of every interlock tag this often; at least 0.1s")}
CONSEQUENTIAL_MAX = 24 * 3600.0


UNIT_FIELDS = {"max_bypassed": Field(integer(0, 10000), doc="interlocks of this unit bypassed at once, at most"),
               "description": Field(text, "", "what the unit is")}


def parse_units(node: Any, path: str, line: int, reader: Reader) -> tuple[ProductionUnit, ...]:
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


def interlock_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {
        "id": Field(identifier, doc="interlock id; its in-service state goes upstream as tag IL.<id>"),
        "description": Field(text, "", "what the interlock does"),
        "unit": Field(text, doc="production unit, declared under rules.units"),
        "bypass": Field(tag_list(tags), (), "tag(s) non-zero while bypassed"),
        "in_service": Field(tag_list(tags), (), "tag(s) non-zero while in service"),
        "protects": Field(tag_list(tags), (), "process tags the interlock protects"),
        "trip": Field(expression_of(tags), None, "the trip condition, an expression over tags"),
        "max_bypass": Field(positive_duration, doc="longest allowed bypass; caps authorizations"),
        "bad_input_votes": Field(one_of("tripped", "healthy"), "tripped",
                                 "a vote() in trip counts a condition on a bad input as tripped or healthy"),
        "causes": Field(any_value, None, "first-out inputs, a list of expressions; default: the top-level `or` "
                                    "operands of trip"),
        "history": Field(any_value, None, "before, after: history kept around a trip (default rules.trip_history); "
                                     "or off"),
        "final_element": Field(any_value, None, "tag, expect (an expression over tag), within: the element must act "
                                           "that soon after a trip"),
        "consequential": Field(any_value, None, "alarms (ids or patterns, no gas alarms), for: suppressed by design "
                                           "that long after a trip"),
    }


def final_element_fields(tags: Mapping[str, Any]) -> dict[str, Field]:
    return {"tag": Field(tag_ref(tags), doc="the final element's feedback tag (valve position, run feedback)"),
            "expect": Field(expression_of(tags), doc="true once the element acted, e.g. \"XV101_ZT < 5\""),
            "within": Field(positive_duration, doc="its response time: at most this long after the trip")}


CONSEQUENTIAL_FIELDS = {
    "alarms": Field(any_value, doc="alarm ids or glob patterns of the unit's consequential alarms (never gas alarms)"),
    "for": Field(lambda value: at_most(positive_duration(value), CONSEQUENTIAL_MAX, "a trip's consequences pass"),
                 doc="how long after the trip they stay suppressed by design; at most 24h"),
}


def parse_trip_history(node: Any, path: str, line: int, reader: Reader, default: TripHistory,
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


def parse_interlocks(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                units: tuple[ProductionUnit, ...], alarm_ids: Mapping[str, int],
                gas_ids: AbstractSet[str]) -> tuple[Interlock, ...]:
    fields = interlock_fields(tags)
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
        convert = expression_of(tags)
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
        history = parse_trip_history(values["history"], join(path, "history"), key_line("history"), reader,
                                     TripHistory())
    final = None
    if values["final_element"] is not None:
        final_path = join(path, "final_element")
        got = reader.section(values["final_element"], final_path, key_line("final_element"),
                             final_element_fields(tags))
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
