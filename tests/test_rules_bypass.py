"""Interlock-bypass supervision and bypass authorizations (IEC 61511 practice)."""

from __future__ import annotations

import json

import pytest
from test_rules_fixtures import ROWS, build, point_table

from core.types import Priority
from rules.bypass import BypassRegistry
from rules.isa import ActionError
from tests.uplinkschemas import event_problems

WALL = 1_700_000_000.0


class Site:
    def __init__(self, backend="numba"):
        self.engine = build(backend)
        self.values, self.quality = point_table()
        self.now = 0.0

    def scan(self, seconds=1.0, **values):
        for name, value in values.items():
            self.values[ROWS[name]] = value
        self.now += seconds
        events = self.engine.evaluate(self.values, self.quality, self.now, WALL + self.now)
        assert event_problems(events) == []
        return [(e.data["interlock"] if "interlock" in e.data else e.source, e.data["event"], e.priority)
                for e in events if e.kind == "bypass"]

    def authorize(self, interlock="SIS-101", duration=5.0, **kw):
        return self.engine.bypass_authorize(interlock, reason="replace PT101", permit="WO-1", approved_by="lead",
                                            requested_by="alice", duration=duration, measures="local gauge watch",
                                            affected_tags=["PT101"], now_wall=WALL + self.now, **kw)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_bypass_without_authorization_then_restored(backend):
    site = Site(backend)
    assert site.scan() == []
    assert site.scan(XS101=1.0) == [("SIS-101", "started", Priority.MEDIUM), ("SIS-101", "unauthorized", Priority.HIGH)]
    assert site.engine.in_service.tolist() == [0.0, 1.0]
    assert site.scan(XS101=0.0) == [("SIS-101", "ended", Priority.LOW), ("SIS-101", "unauthorized_cleared",
                                                                         Priority.INFO)]
    assert site.engine.in_service.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_authorized_bypass_then_authorization_expires_while_still_bypassed(backend):
    site = Site(backend)
    audit = site.authorize(duration=3.0)
    assert [e.kind for e in audit] == ["audit"] and audit[0].data["authorization"]["permit"] == "WO-1"
    assert site.scan(XS101=1.0) == [("SIS-101", "started", Priority.MEDIUM)]
    assert site.scan() == []
    assert site.scan() == [("SIS-101", "expired", Priority.HIGH)]
    assert site.engine.interlocks()[0]["flags"] == ["expired"]


def test_old_authorization_does_not_cover_a_later_bypass():
    site = Site()
    site.authorize(duration=2.0)
    site.scan()
    site.scan()
    site.scan()
    assert site.scan(XS101=1.0) == [("SIS-101", "started", Priority.MEDIUM), ("SIS-101", "unauthorized", Priority.HIGH)]


def test_trip_condition_true_while_bypassed_and_overdue():
    site = Site()
    site.authorize(duration=10.0)
    site.scan(XS101=1.0)
    assert site.scan(PT101=86.0) == [("SIS-101", "trip_while_bypassed", Priority.CRITICAL)]
    events = []
    for _ in range(10):
        events += site.scan()
    assert ("SIS-101", "overdue", Priority.HIGH) in events  # max_bypass 10 s


def test_too_many_bypasses_in_one_unit_and_status_bad():
    site = Site()
    site.scan(XS101=1.0)
    events = site.scan(XS102=0.0)  # SIS-102 reports in service on XS102: 0 means bypassed
    assert ("SIS-102", "started", Priority.MEDIUM) in events and ("U100", "too_many", Priority.HIGH) in events
    site.quality[ROWS["XS101"]] = 17
    events = site.scan(XS101=0.0)
    assert events == [("SIS-101", "status_bad", Priority.HIGH)]
    assert site.engine.bypassed.tolist() == [1, 1]  # held as last known
    assert site.engine.in_service_quality.tolist() == [17, 0]


def test_registry_caps_duration_requires_four_eyes_and_round_trips():
    registry = BypassRegistry({"SIS-101": 3600.0})
    common = dict(reason="r", permit="P-1", measures="m", now=WALL)
    with pytest.raises(ActionError, match="exceeds the maximum bypass duration of 1h"):
        registry.authorize("SIS-101", approved_by="lead", requested_by="alice", duration=7200.0, **common)
    with pytest.raises(ActionError, match="other than the requester"):
        registry.authorize("SIS-101", approved_by="alice", requested_by="alice", duration=60.0, **common)
    with pytest.raises(ActionError, match="unknown interlock"):
        registry.authorize("SIS-9", approved_by="lead", requested_by="alice", duration=60.0, **common)
    first, _ = registry.authorize("SIS-101", approved_by="lead", requested_by="alice", duration=600.0, **common)
    second, _ = registry.authorize("SIS-101", approved_by="lead", requested_by="alice", duration=1200.0, **common)
    assert [r["status"] for r in registry.list(WALL + 1, include_closed=True)] == ["superseded", "in_force"]
    assert registry.window("SIS-101") == (WALL, WALL + 1200.0)
    revoked, events = registry.revoke(second.id, user="lead", reason="work done", now=WALL + 5)
    assert events[0].kind == "audit" and events[0].data["action"] == "bypass_revoke"
    copy = BypassRegistry({"SIS-101": 3600.0})
    copy.from_dict(json.loads(json.dumps(registry.to_dict())))
    assert copy.list(WALL + 6, include_closed=True) == registry.list(WALL + 6, include_closed=True)
    third, _ = copy.authorize("SIS-101", approved_by="lead", requested_by="alice", duration=60.0, **common)
    assert third.id == 3


def test_revoked_authorization_makes_the_bypass_unauthorized_and_state_survives_restart():
    site = Site()
    site.authorize(duration=10.0)
    site.scan(XS101=1.0)
    record = site.engine.bypass_list(now_wall=WALL + site.now)[0]
    site.engine.bypass_revoke(record["id"], user="lead", reason="permit withdrawn", now_wall=WALL + site.now)
    assert site.scan() == [("SIS-101", "unauthorized", Priority.HIGH)]
    saved = json.loads(json.dumps(site.engine.state_dict()))
    fresh = build()
    fresh.restore(saved, now_monotonic=100.0, now_wall=WALL + site.now)
    values, quality = site.values, site.quality
    events = [e for e in fresh.evaluate(values, quality, 101.0, WALL + site.now + 1) if e.kind == "bypass"]
    assert events == []  # already known as bypassed and unauthorized: nothing repeated
    assert fresh.bypass_list(include_closed=True, now_wall=WALL)[0]["status"] == "revoked"
