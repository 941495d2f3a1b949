"""The words of the engine's events: one place for every message an operator reads, apart from the
engine that decides when an event happens (`rules.engine`) and the data it carries."""

from __future__ import annotations

from typing import Any

from core.types import quality_name, quality_note

_BYPASS_MESSAGES = {
    "unauthorized": ("bypassed without a bypass authorization", "bypass now covered by an authorization"),
    "expired": ("bypass authorization expired while the interlock is still bypassed",
                "no longer bypassed on an expired authorization"),
    "trip_while_bypassed": ("trip condition is true while the interlock is bypassed",
                            "trip condition cleared or bypass ended"),
    "measurement_bad": ("bypassed while a measurement it protects has bad quality: neither the interlock nor the "
                        "measurement watches the process", "protected measurements good again or bypass ended"),
    "status_bad": ("bypass status tag has bad quality; bypass state held as last known",
                   "bypass status tag quality good again"),
    "overdue": ("bypassed longer than its maximum bypass duration", "no longer over its maximum bypass duration"),
}


def alarm_message(info: Any, value: float | None, state: str, was: str, cause: str = "",
                  quality: int | None = None) -> str:
    """`PT101.HH UNACK (was NORM): PT101 3.7 MPa, HH limit 3.6 (cause)`; `info` is a `rules.compile.AlarmInfo`.
    A tag whose quality is not good says so next to its value: `PT101 3.7 MPa [COMM_FAILURE]`."""
    detail = ""
    reading = f"{_fmt(value)}{_unit(info.unit)}{quality_note(quality)}"
    if info.kind == "limit":
        detail = f": {info.tag} {reading}, {info.limit} limit {info.setpoint:g}"
    elif info.kind == "gas":
        detail = f": {info.gas or info.tag} {reading}, level {info.gas_level} setpoint {info.setpoint:g}"
    elif info.kind == "bad_pv":
        detail = f": {info.tag} quality {quality_name(quality)}, last value {_fmt(value)}{_unit(info.unit)}"
    elif info.kind == "expression":
        detail = f": {info.when}"
    elif info.tag:
        detail = f": {info.tag} {reading}"
    if cause:
        detail += f" ({cause})"
    return f"{info.id} {state} (was {was}){detail}"


def bypass_message(interlock: str, flag: str, raised: bool) -> str:
    """The message of one interlock flag edge; `flag` is a `rules.interlocks.FLAG_EVENTS` name."""
    if flag == "started":
        return f"interlock {interlock} {'bypassed' if raised else 'restored to service'}"
    return f"interlock {interlock}: " + _BYPASS_MESSAGES[flag][0 if raised else 1]


def too_many_message(unit: str, bypassed: int, limit: int | None, over: bool) -> str:
    return (f"unit {unit}: {bypassed} interlocks bypassed at once, more than the {limit} allowed" if over
            else f"unit {unit}: bypassed interlocks back within the limit of {limit}")


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""
