"""The shelved / suppressed / out-of-service report: what is hidden from the operator, and how often it
would have sounded.

An alarm that is SHLVD, DSUPR or OOSRV does not annunciate, but its activations are counted
(`rules.isa`, `hidden`). Every `rules.analytics.shelved_report_interval` seconds the engine emits one
`analytics` event (`analysis: hidden_report`) listing each such alarm with its state, since when, the
shelf's end, whether it is latched or active, and its occurrences while hidden, so that nobody has to
wonder how often a shelved GAS2 would have sounded. The report comes even when nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.types import Event, Priority

HIDDEN_STATES = ("SHLVD", "DSUPR", "OOSRV")
REPORTED = ("id", "state", "priority", "kind", "tag", "since", "shelved_until", "active", "latched",
            "hidden_occurrences", "class", "authorization")


class HiddenReport:
    def __init__(self, interval: float, now_mono: float):
        self.interval = interval
        self.next_due = now_mono + interval if interval > 0 else float("inf")

    def due(self, now_mono: float) -> bool:
        """True once per interval; the next report is due an interval later."""
        if now_mono < self.next_due:
            return False
        self.next_due = now_mono + self.interval
        return True

    def event(self, now_wall: float, alarms: Iterable[Mapping[str, Any]]) -> Event:
        """The report over `alarms` (`RuleEngine.alarms()` items; those not hidden are left out)."""
        hidden = [{key: item[key] for key in REPORTED} for item in alarms if item["state"] in HIDDEN_STATES]
        occurrences = sum(item["hidden_occurrences"] for item in hidden)
        counts = {state: sum(item["state"] == state for item in hidden) for state in HIDDEN_STATES}
        message = (f"hidden alarms: {counts['SHLVD']} shelved, {counts['DSUPR']} suppressed by design, "
                   f"{counts['OOSRV']} out of service; {occurrences} occurrences while hidden")
        noisy = sorted((item for item in hidden if item["hidden_occurrences"]),
                       key=lambda item: -item["hidden_occurrences"])
        if noisy:
            message += " (" + ", ".join(f"{item['id']} {item['hidden_occurrences']}" for item in noisy[:5]) + ")"
        return Event("analytics", now_wall, "alarms", message, Priority.INFO,
                     {"analysis": "hidden_report", "counts": counts, "occurrences": occurrences, "alarms": hidden})
