"""Highly managed alarms (ISA-18.2 class): an alarm whose shelving or removal from service is itself
controlled, like an interlock bypass. GB/T 50493 level 2 gas alarms are highly managed unless
configured otherwise (`level2_class`); any other alarm is by `class: highly_managed`.

Shelving one, or taking it out of service, needs an authorization: a permit (work order), an approver
other than the requester (compared without case) and a duration no longer than
`rules.shelving.highly_managed_max`. Over the control socket it is a request by one account approved by
another (`rules.requests`, `RuleEngine.request_action` / `approve`); code callers may give it with the
action (`authorize`). Without one the action is refused, naming what is missing.
The authorization ends with the shelf or the out-of-service period; an out-of-service period ends by
itself when its authorization runs out (the engine returns the alarm to service and audits it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rules.bypass import require_four_eyes
from rules.isa import ActionError, format_seconds

MANAGED_ACTIONS = ("shelve", "out_of_service")


@dataclass(frozen=True)
class AlarmAuthorization:
    alarm: str
    action: str  # shelve or out_of_service
    permit: str
    approved_by: str
    requested_by: str
    start: float  # wall clock
    duration: float

    @property
    def until(self) -> float:
        return self.start + self.duration

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "until": self.until}


def authorize(alarm: str, action: str, *, requested_by: str, permit: str | None, approved_by: str | None,
              duration: float | None, maximum: float, now_wall: float) -> AlarmAuthorization:
    """The authorization for `action` on a highly managed alarm, or ActionError saying what is missing."""
    what = "shelving" if action == "shelve" else "taking out of service"
    missing = [name for name, value in (("a permit", permit), ("an approver", approved_by))
               if not isinstance(value, str) or not value.strip()]
    if duration is None:
        missing.append("a duration")
    if missing:
        raise ActionError(f"{alarm} is a highly managed alarm: {what} it needs an authorization with "
                          f"{', '.join(missing)} (--permit, --approved-by, --for)")
    require_four_eyes(approved_by, requested_by)
    check_duration(alarm, action, duration, maximum)
    return AlarmAuthorization(alarm, action, permit.strip(), approved_by.strip(), requested_by, now_wall,
                              float(duration))


def check_duration(alarm: str, action: str, duration: float, maximum: float) -> None:
    """ActionError unless `duration` is above zero and at most `maximum` (rules.shelving.highly_managed_max)."""
    if not duration > 0:
        raise ActionError("the duration must be longer than zero")
    if duration > maximum:
        what = "shelving" if action == "shelve" else "taking out of service"
        raise ActionError(f"{what} the highly managed alarm {alarm} for {format_seconds(duration)} exceeds the "
                          f"maximum of {format_seconds(maximum)} (rules.shelving.highly_managed_max)")
