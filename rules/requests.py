"""Four eyes in two steps: a request by one account, an approval by another, each its own command.

An interlock bypass authorization, or shelving (or taking out of service) a highly managed alarm, is
not given in one command naming two people: one account asks (`add`), another approves (`approve`),
and only the approval makes it happen. The accounts are whatever the caller says they are; over the
control socket that is the kernel's account (`gatewayd.operator.access`), never a typed-in name.

    book = RequestBook()
    request = book.add("bypass", "SIS-101", requested_by="alice", reason="transmitter swap", permit="WO-7",
                       duration=4 * 3600, details={"measures": "local gauge", "affected_tags": ["PT101"]},
                       now=wall, window=3600)
    book.approvable(request.id, "bob", now=later)   # raises ActionError: unknown, expired, approved, self
    book.approved(request.id, "bob", now=later)     # records the approval

A request expires `window` seconds after it was made: at exactly `expires_at` it can no longer be
approved. Approver and requester are compared without case or surrounding blanks. Times are wall clock.
The book keeps every pending request and the last `CLOSED_KEPT` closed ones (the audit events upstream
keep them all); persistence is the caller's (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rules.bypass import same_person
from rules.isa import ActionError, format_seconds

CLOSED_KEPT = 1000
KINDS = ("bypass", "shelve", "out_of_service")  # what a request may ask for


@dataclass(frozen=True)
class Request:
    id: int
    kind: str  # one of KINDS
    target: str  # the interlock, or the alarm id
    requested_by: str
    reason: str
    permit: str
    duration: float  # seconds the authorization lasts once approved
    requested_at: float
    expires_at: float
    details: dict[str, Any] = field(default_factory=dict)  # bypass: measures, affected_tags; shelve: one_shot
    approved_by: str = ""
    approved_at: float | None = None

    def status(self, now: float) -> str:
        if self.approved_at is not None:
            return "approved"
        return "pending" if now < self.expires_at else "expired"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """`shelve AT201.GAS2 for 1h` - what the request asks for."""
        return f"{self.kind.replace('_', ' ')} {self.target} for {format_seconds(self.duration)}"


class RequestBook:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._ids = itertools.count(1)

    def add(self, kind: str, target: str, *, requested_by: str, reason: str, permit: str, duration: float,
            details: Mapping[str, Any], now: float, window: float) -> Request:
        if kind not in KINDS:
            raise ActionError(f"a request is for one of {', '.join(KINDS)}, not {kind!r}")
        for name, value in (("the requesting account", requested_by), ("a reason", reason), ("a permit", permit)):
            if not isinstance(value, str) or not value.strip():
                raise ActionError(f"a request needs {name}")
        if not window > 0:
            raise ActionError("the approval window must be longer than zero")
        request = Request(next(self._ids), kind, target, requested_by, reason, permit.strip(), float(duration), now,
                          now + window, dict(details))
        self.requests.append(request)
        self._prune(now)
        return request

    def approvable(self, request_id: int, approved_by: str, now: float) -> Request:
        """The request `approved_by` may approve now, or ActionError saying why not."""
        request = self._find(request_id)
        if request.approved_at is not None:
            raise ActionError(f"request {request_id} was already approved by {request.approved_by}")
        if now >= request.expires_at:
            raise ActionError(f"request {request_id} ({request.describe()}) expired: it was not approved within "
                              f"{format_seconds(request.expires_at - request.requested_at)}; "
                              f"{request.requested_by} must request it again")
        if not isinstance(approved_by, str) or not approved_by.strip():
            raise ActionError("an approval needs the approving account")
        if same_person(approved_by, request.requested_by):
            raise ActionError(f"request {request_id} was made by {request.requested_by}: it must be approved by "
                              f"another account, not by the one that asked")
        return request

    def approved(self, request_id: int, approved_by: str, now: float) -> Request:
        """Record the approval (after `approvable` and after what it authorizes was done)."""
        request = self.approvable(request_id, approved_by, now)
        done = replace(request, approved_by=approved_by, approved_at=now)
        self.requests[self.requests.index(request)] = done
        return done

    def list(self, now: float, include_closed: bool = False) -> list[dict[str, Any]]:
        return [{**request.to_dict(), "status": request.status(now)} for request in self.requests
                if include_closed or request.status(now) == "pending"]

    def _find(self, request_id: int) -> Request:
        for request in self.requests:
            if request.id == request_id:
                return request
        raise ActionError(f"no request {request_id} (see `gatewayd requests --all`)")

    def _prune(self, now: float) -> None:
        closed = [request for request in self.requests if request.status(now) != "pending"]
        if len(closed) > CLOSED_KEPT:
            dropped = {request.id for request in closed[:len(closed) - CLOSED_KEPT]}
            self.requests = [request for request in self.requests if request.id not in dropped]

    def to_dict(self) -> dict[str, Any]:
        return {"requests": [request.to_dict() for request in self.requests]}

    def from_dict(self, data: Mapping[str, Any]) -> None:
        self.requests = [Request(**item) for item in data.get("requests", [])]
        self._ids = itertools.count(max((request.id for request in self.requests), default=0) + 1)
