"""The `points` command: the point table as a reader sees it (the console's point table and trends).

One dict per tag: the current value, its quality and age, and what the configuration says about the tag
(unit, range, alarm limits, gas levels), so a reader needs nothing but the control socket to draw a
value against its limits. And `ActionRecord`: who shelved an alarm or took it out of service, and until
when, learnt from the audit records the scan commits (the engine keeps the state, not the person).
Read-only, and pure functions of the live table: called on the loop, like `status`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from core.types import Event, quality_name

ACTIONS_KEPT = ("shelve", "out_of_service")  # actions whose author a reader shows beside the alarm
ACTIONS_ENDING = ("unshelve", "return_to_service")


def tag_limits(tag: Any, gas: Iterable[Any]) -> dict[str, float]:
    """The alarm limits drawn beside a tag: HH/H/L/LL of its `alarms:` block, L1/L2 of its gas channel."""
    limits = {limit.level: float(limit.setpoint) for limit in tag.alarms.limits} if tag.alarms else {}
    for channel in gas:
        if channel.tag == tag.name:
            limits.update({"L1": float(channel.level1), "L2": float(channel.level2)})
    return limits


def point_list(table: Any, gas: Sequence[Any], now_wall: float | None = None) -> list[dict[str, Any]]:
    """Every row of the point table, in configuration order."""
    now_wall = time.time() if now_wall is None else now_wall
    values, qualities, stamps = table.value.tolist(), table.quality.tolist(), table.gateway_ts.tolist()
    listing = []
    for row, tag in enumerate(table.tags):
        value = values[row]
        listing.append({
            "tag": tag.name, "device": tag.device, "description": tag.description, "unit": tag.unit,
            "value": None if math.isnan(value) else value, "quality": qualities[row],
            "quality_name": quality_name(qualities[row]), "ts": stamps[row], "age": max(0.0, now_wall - stamps[row]),
            "range": [tag.range_low, tag.range_high] if tag.range_low is not None else None,
            "limits": tag_limits(tag, gas),
        })
    return listing


class ActionRecord:
    """The latest shelve or out-of-service action per alarm, from the audit events of committed ticks.

    Kept since the daemon started: an alarm shelved before a restart shows its state (the engine restores
    it) with its author unknown."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.kind != "audit":
                continue
            action = event.data.get("action")
            if action in ACTIONS_KEPT:
                self.latest[event.source] = {
                    "action": action, "by": event.data.get("account") or event.data.get("user"), "at": event.ts,
                    "until": event.data.get("until"), "reason": event.data.get("reason", "")}
            elif action in ACTIONS_ENDING:
                self.latest.pop(event.source, None)
