"""Bypass authorizations: who allowed which interlock to be bypassed, why, under which permit, until when.

    registry = BypassRegistry({"SIS-101": 8 * 3600})
    record, events = registry.authorize("SIS-101", reason="transmitter replacement", permit="WO-2291",
                                        approved_by="shift.lead", requested_by="alice", duration=4 * 3600,
                                        measures="manual watch on PT101 local gauge", affected_tags=["PT101"],
                                        now=time.time())

Over the control socket nobody calls `authorize` directly: one account requests, another approves
(`rules.requests`), and the approval calls it with both accounts and the request's number.

A record holds what IEC 61511 practice asks for (interlock, reason, requested by, approved by, permit,
start, maximum duration, compensating measures, affected tags). Durations are capped by the
interlock's `max_bypass`: a longer request is refused, never shortened silently. Approver and
requester must differ (compared without regard to case or surrounding blanks: `Alice` cannot approve
her own request as `alice`). A new authorization for an interlock supersedes the one in force. A
revocation needs who and why. Times are wall clock (Unix seconds): an authorization is a record with
an end time people read.

The registry also keeps the bypass episodes (one per bypassed-to-restored span of an interlock, told
by the engine through `episode_started` / `episode_ended`) and links each to the authorizations that
covered it: the one in force when it began and any given while it lasted. An authorization's bypassed
time is the sum of its episodes, so a restore for a second does not reset it (`bypassed_before`).
Persistence is the caller's: `to_dict()` / `from_dict()`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from core.types import Event, Priority
from rules.isa import ActionError, format_seconds


@dataclass(frozen=True)
class Authorization:
    id: int
    interlock: str
    reason: str
    permit: str
    approved_by: str
    requested_by: str
    start: float
    duration: float
    measures: str
    affected_tags: tuple[str, ...] = ()
    revoked_at: float | None = None
    revoked_by: str = ""
    superseded_by: int | None = None
    request: int | None = None  # the approved request (rules.requests) it came from; None if given directly

    @property
    def end(self) -> float:
        return self.start + self.duration

    def in_force(self, now: float) -> bool:
        return self.revoked_at is None and self.superseded_by is None and self.start <= now < self.end

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.superseded_by is not None:
            return "superseded"
        if now >= self.end:
            return "expired"
        return "in_force" if now >= self.start else "pending"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["affected_tags"] = list(self.affected_tags)
        return data


EPISODES_KEPT = 1000  # closed bypass episodes kept in the registry (and in the saved state)


@dataclass
class Episode:
    """One span of an interlock bypassed, from `start` to `end` (wall clock; None while it lasts)."""

    id: int
    interlock: str
    start: float
    end: float | None = None
    duration: float | None = None  # seconds, measured on the monotonic clock by the engine
    authorizations: list[int] = field(default_factory=list)

    def seconds(self, now: float) -> float:
        return self.duration if self.duration is not None else max(0.0, now - self.start)


class BypassRegistry:
    def __init__(self, max_bypass: Mapping[str, float]):
        self.max_bypass = dict(max_bypass)
        self.records: list[Authorization] = []
        self.episodes: list[Episode] = []
        self._ids = itertools.count(1)
        self._episode_ids = itertools.count(1)

    def check(self, interlock: str, *, reason: str, permit: str, requested_by: str, duration: float,
              measures: str) -> None:
        """ActionError unless an authorization with these fields could be given (the approver aside)."""
        if interlock not in self.max_bypass:
            raise ActionError(f"unknown interlock {interlock!r}; known: {', '.join(sorted(self.max_bypass))}")
        for name, value in (("reason", reason), ("permit", permit), ("requested_by", requested_by),
                            ("measures", measures)):
            if not isinstance(value, str) or not value.strip():
                raise ActionError(f"a bypass authorization needs {name.replace('_', ' ')}")
        maximum = self.max_bypass[interlock]
        if not duration > 0:
            raise ActionError("the duration must be longer than zero")
        if duration > maximum:
            raise ActionError(f"{format_seconds(duration)} exceeds the maximum bypass duration of "
                              f"{format_seconds(maximum)} for {interlock}")

    def authorize(self, interlock: str, *, reason: str, permit: str, approved_by: str, requested_by: str,
                  duration: float, measures: str, affected_tags: Iterable[str] = (), now: float,
                  start: float | None = None, request: int | None = None, user: str | None = None,
                  headline: str | None = None) -> tuple[Authorization, list[Event]]:
        """`user` heads the audit record (default the requester; the approver when it approves a request)."""
        self.check(interlock, reason=reason, permit=permit, requested_by=requested_by, duration=duration,
                   measures=measures)
        if not isinstance(approved_by, str) or not approved_by.strip():
            raise ActionError("a bypass authorization needs approved by")
        require_four_eyes(approved_by, requested_by)
        record = Authorization(next(self._ids), interlock, reason, permit, approved_by, requested_by,
                               now if start is None else start, float(duration), measures, tuple(affected_tags),
                               request=request)
        events = []
        for index, old in enumerate(self.records):
            if old.interlock == interlock and old.revoked_at is None and old.superseded_by is None \
                    and now < old.end:
                self.records[index] = replace(old, superseded_by=record.id)
        self.records.append(record)
        episode = self.open_episode(interlock)
        if episode is not None:
            episode.authorizations.append(record.id)
        events.append(audit_event(now, user or requested_by, "bypass_authorize", interlock, reason,
                                  {"authorization": record.to_dict(), "until": record.end}, headline))
        return record, events

    def revoke(self, authorization_id: int, *, user: str, reason: str, now: float) -> tuple[Authorization, list[Event]]:
        for name, value in (("the user who revokes it", user), ("a reason", reason)):
            if not isinstance(value, str) or not value.strip():
                raise ActionError(f"revoking a bypass authorization needs {name}")
        for index, record in enumerate(self.records):
            if record.id == authorization_id:
                if record.revoked_at is not None:
                    raise ActionError(f"authorization {authorization_id} was already revoked")
                revoked = replace(record, revoked_at=now, revoked_by=user)
                self.records[index] = revoked
                return revoked, [audit_event(now, user, "bypass_revoke", record.interlock, reason,
                                             {"authorization": revoked.to_dict()})]
        raise ActionError(f"no bypass authorization with id {authorization_id}")

    def list(self, now: float, include_closed: bool = False) -> list[dict[str, Any]]:
        """Each authorization with its status, end, the bypass episodes it covered and their total seconds."""
        listing = []
        for record in self.records:
            if include_closed or record.status(now) in ("in_force", "pending"):
                covered = self._covered_by(record.id)
                listing.append({**record.to_dict(), "status": record.status(now), "end": record.end,
                                "episodes": [episode.id for episode in covered],
                                "bypassed_seconds": sum(episode.seconds(now) for episode in covered)})
        return listing

    def current(self, interlock: str) -> Authorization | None:
        """The authorization that is current for `interlock` (neither revoked nor superseded), if any."""
        for record in reversed(self.records):
            if record.interlock == interlock and record.revoked_at is None and record.superseded_by is None:
                return record
        return None

    def window(self, interlock: str) -> tuple[float, float]:
        """(start, end) of the authorization that is current for `interlock`, NaN-NaN when there is none."""
        record = self.current(interlock)
        return (record.start, record.end) if record is not None else (math.nan, math.nan)

    # ------------------------------------------------------------ episodes

    def open_episode(self, interlock: str) -> Episode | None:
        return next((e for e in reversed(self.episodes) if e.interlock == interlock and e.end is None), None)

    def episode_started(self, interlock: str, now: float) -> Episode:
        """A bypass began: linked to the authorization in force now (one that has ended does not cover it)."""
        episode = Episode(next(self._episode_ids), interlock, now)
        record = self.current(interlock)
        if record is not None and record.in_force(now):
            episode.authorizations.append(record.id)
        self.episodes.append(episode)
        return episode

    def episode_ended(self, interlock: str, now: float, duration: float) -> Episode | None:
        """The bypass ended after `duration` seconds; None when the registry never saw it begin."""
        episode = self.open_episode(interlock)
        if episode is not None:
            episode.end, episode.duration = now, float(duration)
        closed = [e for e in self.episodes if e.end is not None]
        if len(closed) > EPISODES_KEPT:  # the events upstream keep them all; the state stays small
            dropped = {e.id for e in closed[:len(closed) - EPISODES_KEPT]}
            self.episodes = [e for e in self.episodes if e.id not in dropped]
        return episode

    def bypassed_before(self, interlock: str) -> float:
        """Seconds of the closed episodes covered by the current authorization of `interlock` (0 without
        one): what the interlock's overdue check adds to the running episode."""
        record = self.current(interlock)
        if record is None:
            return 0.0
        return sum(episode.duration or 0.0 for episode in self._covered_by(record.id) if episode.end is not None)

    def _covered_by(self, authorization_id: int) -> list[Episode]:
        return [episode for episode in self.episodes if authorization_id in episode.authorizations]

    def to_dict(self) -> dict[str, Any]:
        return {"records": [record.to_dict() for record in self.records],
                "episodes": [asdict(episode) for episode in self.episodes]}

    def from_dict(self, data: Mapping[str, Any]) -> None:
        self.records = [Authorization(**{**item, "affected_tags": tuple(item.get("affected_tags", ()))})
                        for item in data.get("records", [])]
        self.episodes = [Episode(**item) for item in data.get("episodes", [])]
        self._ids = itertools.count(max((record.id for record in self.records), default=0) + 1)
        self._episode_ids = itertools.count(max((episode.id for episode in self.episodes), default=0) + 1)


def same_person(one: str, other: str) -> bool:
    """`J.Wang` and ` j.wang` are one person."""
    return one.strip().casefold() == other.strip().casefold()


def require_four_eyes(approved_by: str, *requesters: str) -> None:
    """Four eyes: the approver is someone other than the requester."""
    if any(same_person(approved_by, requester) for requester in requesters):
        raise ActionError("the approver must be someone other than the requester")


def audit_event(now: float, user: str, action: str, target: str, reason: str, extra: Mapping[str, Any],
                headline: str | None = None) -> Event:
    """An audit record: who did what to which target, when and why. The message starts with `user`; a
    `headline` (what was done, after the user) replaces the default `action target`."""
    message = f"{user} {headline or action.replace('_', ' ') + ' ' + target}" + (f": {reason}" if reason else "")
    return Event("audit", now, target, message, Priority.INFO,
                 {"user": user, "action": action, "target": target, "reason": reason, "at": now, **extra})
