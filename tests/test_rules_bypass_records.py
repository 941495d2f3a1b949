"""Bypass records (IEC 61511 practice): episode durations, authorizations linked to the episodes they
covered, overdue on the bypassed time per authorization, windows on the wall clock, four eyes whatever
the case, revocations with who and why; all through state_dict/restore, on both backends."""

from __future__ import annotations

import json

import pytest
from test_rules_bypass import WALL, Site
from test_rules_fixtures import build

from rules.isa import ActionError

BACKENDS = ["numba", "reference"]


def bypass_events(events, name=None):
    return [e for e in events if e.kind == "bypass" and (name is None or e.data["event"] == name)]


class Records(Site):
    """The fixture plant's SIS-101 (max_bypass 10 s) and SIS-102 (20 s), with every event kept."""

    def __init__(self, backend):
        super().__init__(backend)
        self.events = []

    def run(self, seconds=1.0, **values):
        for name, value in values.items():
            self.values[self._row(name)] = value
        self.now += seconds
        events = self.engine.evaluate(self.values, self.quality, self.now, WALL + self.now)
        self.events += events
        return events

    @staticmethod
    def _row(name):
        from test_rules_fixtures import ROWS
        return ROWS[name]

    def hold(self, seconds, **values):
        events = self.run(**values)
        for _ in range(int(seconds) - 1):
            events += self.run()
        return events


@pytest.mark.parametrize("backend", BACKENDS)
def test_ended_event_carries_the_bypass_duration_and_its_span(backend):
    site = Records(backend)
    site.run()
    started = bypass_events(site.run(XS101=1.0), "started")[0]
    site.hold(6)
    ended = bypass_events(site.run(XS101=0.0), "ended")[0]
    assert ended.data["duration"] == pytest.approx(7.0)
    assert ended.data["bypassed_from"] == pytest.approx(WALL + 2.0)
    assert ended.data["bypassed_until"] == pytest.approx(WALL + 9.0)
    assert ended.data["episode"] == started.data["episode"] == 1
    assert started.data["authorizations"] == ended.data["authorizations"] == []  # never authorized


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_authorization_is_linked_to_every_episode_it_covered(backend):
    site = Records(backend)
    record = site.authorize("SIS-102", duration=20.0)[0].data["authorization"]
    site.hold(3, XS102=0.0)  # in-service tag: 0 is bypassed
    first = bypass_events(site.run(XS102=1.0), "ended")[0]
    site.hold(2, XS102=0.0)
    second = bypass_events(site.run(XS102=1.0), "ended")[0]
    assert first.data["authorizations"] == second.data["authorizations"] == [record["id"]]
    listed = site.engine.bypass_list(include_closed=True, now_wall=WALL + site.now)[0]
    assert listed["episodes"] == [first.data["episode"], second.data["episode"]] == [1, 2]
    assert listed["bypassed_seconds"] == pytest.approx(3.0 + 2.0)
    # an authorization given during a bypass covers that episode too
    site.hold(2, XS101=1.0)
    late = site.authorize("SIS-101", duration=10.0)[0].data["authorization"]
    ended = bypass_events(site.run(XS101=0.0), "ended")[0]
    assert ended.data["authorizations"] == [late["id"]] and ended.data["duration"] == pytest.approx(2.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overdue_counts_the_bypassed_time_per_authorization_a_short_restore_does_not_reset_it(backend):
    site = Records(backend)
    site.authorize("SIS-102", duration=20.0)  # max_bypass 20 s
    site.hold(12, XS102=0.0)  # an episode of 12 s (hold(N): N scans, the first one at 0 s)
    site.run(XS102=1.0)  # restored for one second ...
    events = site.hold(8, XS102=0.0)  # ... and bypassed again: 12 + 7 = 19 s under this authorization
    assert bypass_events(events, "overdue") == []
    overdue = bypass_events(site.run(), "overdue")  # 20 s
    assert len(overdue) == 1 and overdue[0].data["bypassed_total"] == pytest.approx(20.0)
    assert site.engine.interlocks()[1]["bypassed_total"] == pytest.approx(20.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_an_authorization_overdue_is_per_episode(backend):
    site = Records(backend)
    site.hold(8, XS101=1.0)  # max_bypass 10 s, unauthorized
    site.run(XS101=0.0)
    assert bypass_events(site.hold(10, XS101=1.0), "overdue") == []  # 9 s
    assert len(bypass_events(site.run(), "overdue")) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_authorization_window_runs_on_the_wall_clock(backend):
    """The wall clock is stepped an hour ahead (NTP) while the monotonic clock moves one second: the
    authorization that covered the bypass has expired, which is `expired`, not a bypass never authorized."""
    site = Records(backend)
    site.authorize("SIS-102", duration=5.0)
    site.run(XS102=0.0)
    site.now += 1.0
    events = site.engine.evaluate(site.values, site.quality, site.now, WALL + site.now + 3600.0)
    assert [e.data["event"] for e in bypass_events(events)] == ["expired"]


@pytest.mark.parametrize("approver", ["Alice", " ALICE ", "alice"])
def test_four_eyes_compares_identities_without_case(approver):
    site = Records("reference")
    with pytest.raises(ActionError, match="other than the requester"):
        site.engine.bypass_authorize("SIS-101", reason="r", permit="WO-1", approved_by=approver,
                                     requested_by="alice", duration=5.0, measures="m", now_wall=WALL)
    assert site.engine.bypass_list(include_closed=True, now_wall=WALL) == []


@pytest.mark.parametrize("user, reason, missing", [("", "done", "the user"), ("lead", " ", "a reason"),
                                                   (None, "done", "the user"), ("lead", None, "a reason")])
def test_a_revocation_needs_who_and_why(user, reason, missing):
    site = Records("reference")
    record = site.authorize(duration=5.0)[0].data["authorization"]
    with pytest.raises(ActionError, match=f"revoking a bypass authorization needs {missing}"):
        site.engine.bypass_revoke(record["id"], user=user, reason=reason, now_wall=WALL + 1)
    assert site.engine.bypass_list(now_wall=WALL + 1)[0]["status"] == "in_force"


@pytest.mark.parametrize("backend", BACKENDS)
def test_episodes_and_bypassed_time_survive_a_restart(backend):
    site = Records(backend)
    site.authorize("SIS-102", duration=20.0)
    site.hold(12, XS102=0.0)
    site.run(XS102=1.0)
    site.hold(3, XS102=0.0)  # bypassed at the restart since 2 s: 14 s under the authorization so far
    saved = json.loads(json.dumps(site.engine.state_dict()))
    fresh = build(backend)
    fresh.restore(saved, now_monotonic=500.0, now_wall=WALL + site.now)
    assert fresh.interlocks()[1]["bypassed_total"] == pytest.approx(14.0)
    assert fresh.interlocks()[1]["bypassed_since"] == pytest.approx(WALL + 14.0)
    overdue = []
    for second in range(1, 7):
        events = bypass_events(fresh.evaluate(site.values, site.quality, 500.0 + second, WALL + site.now + second))
        overdue += [second for e in events if e.data["event"] == "overdue"]
    assert overdue == [6]  # 12 + 2 + 6 = 20 s
    site.values[Records._row("XS102")] = 1.0
    ended = bypass_events(fresh.evaluate(site.values, site.quality, 507.0, WALL + site.now + 7), "ended")[0]
    assert ended.data["episode"] == 2 and ended.data["duration"] == pytest.approx(9.0)
    assert fresh.bypass_list(include_closed=True, now_wall=WALL + site.now + 7)[0]["episodes"] == [1, 2]


def test_bypass_list_shows_the_bypassed_time_of_each_authorization():
    from gatewayd.operator.render import render_bypass_list

    site = Records("reference")
    site.authorize("SIS-102", duration=20.0)
    site.hold(13, XS102=0.0)
    site.run(XS102=1.0)
    table = render_bypass_list(site.engine.bypass_list(now_wall=WALL + site.now))
    assert "BYPASSED" in table.splitlines()[0] and "0m in 1 episode " in table
