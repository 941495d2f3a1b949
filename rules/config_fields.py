"""Field converters the rules configuration shares among its sections: tag and priority references,
expressions, durations with bounds, deadbands in units or percent. Each raises `Invalid` with what
would be valid; `rules.config` and `rules.gas_config` build their `Field` tables from them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.schema import Invalid, number
from rules.expr import ExpressionError, parse_expression
from rules.model import DEFAULT_PRIORITIES, PRIORITY_LEVELS

ALARM_CLASSES = ("standard", "highly_managed")
FLOOD_WINDOW_MAX = 3600.0  # rules.analytics keeps one hour of activations (peak per hour)
PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def any_value(value: Any) -> Any:
    return value


def optional_of(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def positive_number(value: Any) -> float:
    result = number()(value)
    if result <= 0:
        raise Invalid(f"must be above zero, got {value!r}")
    return result


def at_most(seconds: float, maximum: float, why: str) -> float:
    if seconds > maximum:
        raise Invalid(f"{seconds:g} s is longer than the {maximum:g} s allowed: {why}")
    return seconds


def at_least(seconds: float, minimum: float) -> float:
    if seconds < minimum:
        raise Invalid(f"{seconds:g} s is shorter than the {minimum:g} s allowed")
    return seconds


def deadband_value(value: Any) -> float | str:
    """A number in engineering units, or 'N%' of the tag's range (resolved by the caller)."""
    if isinstance(value, str) and PERCENT.match(value):
        return value.strip()
    return number(0.0)(value)


def priority_of(names: Iterable[str]) -> Callable[[Any], str]:
    choices = tuple(names)

    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"{value!r} is not a priority; configured priorities: {', '.join(choices)}")
        return value

    return convert


def tag_ref(tags: Mapping[str, Any]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in tags:
            close = difflib.get_close_matches(str(value), list(tags), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise Invalid(f"{value!r} is not a tag{hint}")
        return value

    return convert


def tag_list(tags: Mapping[str, Any]) -> Callable[[Any], tuple[str, ...]]:
    single = tag_ref(tags)

    def convert(value: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        result = tuple(single(item) for item in items)
        if len(set(result)) != len(result):
            raise Invalid("a tag is listed twice")
        return result

    return convert


def expression_of(tags: Mapping[str, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return parse_expression(value, tags)
        except ExpressionError as exc:
            raise Invalid(f"bad expression {value!r}: {exc}") from None

    return convert


def number_or_bool(value: Any) -> float:
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
