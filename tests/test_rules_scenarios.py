"""Scenarios from ISA-18.2, EEMUA 191 and GB/T 50493, driven through the engine with explicit time."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from test_rules_fixtures import INFO, ROWS, TAGS, behaviour, build, point_table

from core.types import Priority
from rules.analytics import AlarmAnalytics
from rules.engine import RuleEngine
from rules.gas import order_gas_alarms
from rules.isa import ActionError
from rules.model import (
    AnalyticsConfig,
    GasChannel,
    LimitAlarm,
    RulesConfig,
    TagAlarmConfig,
)
from tests.uplinkschemas import event_problems

WALL = 1_700_000_000.0


class Plant:
    """An engine over the fixture plant with a clock that only moves when told."""

    def __init__(self, backend="numba", **build_args):
        self.engine = build(backend, **build_args)
        self.values, self.quality = point_table()
        self.now = 0.0
        self.events = []

    def scan(self, seconds=1.0, **values):
        for name, value in values.items():
            self.values[ROWS[name]] = value
        self.now += seconds
        events = self.engine.evaluate(self.values, self.quality, self.now, WALL + self.now)
        assert event_problems(events) == []
        self.events += events
        return events

    def act(self, action, alarm, **kw):
        events = self.engine.act(action, alarm, "alice", kw.pop("reason", "because"), now_monotonic=self.now,
                                 now_wall=WALL + self.now, **kw)
        # the audit record goes upstream stamped with the account by the control socket (test_control)
        assert event_problems(event for event in events if event.kind != "audit") == []
        self.events += events
        return events

    def state(self, alarm):
        return next(item["state"] for item in self.engine.alarms(include_normal=True) if item["id"] == alarm)

    def transitions(self, alarm):
        return [e.data["state"] for e in self.events if e.kind in ("alarm", "gas_alarm") and e.data["alarm"] == alarm]


def test_on_delay_suppresses_a_short_excursion():
    plant = Plant()
    plant.scan(PT101=82.0)  # H has a 2 s on-delay
    plant.scan(PT101=82.0)
    plant.scan(PT101=70.0)  # back before 2 s: nothing raised
    assert plant.transitions("PT101.H") == []
    plant.scan(PT101=82.0)
    plant.scan(PT101=82.0)
    plant.scan(PT101=82.0)
    assert plant.transitions("PT101.H") == ["UNACK"]


def test_off_delay_reports_the_return_only_after_it_stayed_clear():
    plant = Plant()
    for _ in range(3):
        plant.scan(PT101=82.0)
    plant.scan(0.5, PT101=70.0)
    plant.scan(0.4, PT101=82.0)  # back in alarm within the 1 s off-delay: no return
    plant.scan(0.5, PT101=70.0)
    plant.scan(0.5, PT101=70.0)
    assert plant.transitions("PT101.H") == ["UNACK"]
    plant.scan(0.5, PT101=70.0)
    assert plant.transitions("PT101.H") == ["UNACK", "RTNUN"]


def test_deadband_stops_chattering_at_the_limit():
    plant = Plant()
    for value in (49.0, 50.0, 49.5, 50.2, 49.0, 48.0):  # TT102.H at 50 with no deadband chatters
        plant.scan(TT102=value)
    assert plant.transitions("TT102.H") == ["UNACK", "RTNUN", "UNACK", "RTNUN"]
    plant = Plant()
    for value in (15.0, 20.0, 20.5, 19.8, 20.9, 21.5):  # PT101.L at 20 with deadband 1 holds until > 21
        plant.scan(PT101=value)
    assert plant.transitions("PT101.L") == ["UNACK", "RTNUN"]


def test_chattering_alarm_is_detected_and_ends():
    plant = Plant()
    for value in (55.0, 45.0, 55.0, 45.0, 55.0):
        plant.scan(TT102=value)
    chatter = [e for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "chattering"]
    assert "TT102.H" in [e.source for e in chatter]
    for _ in range(12):
        plant.scan(TT102=45.0)
    ended = [e.source for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "chattering_end"]
    assert "TT102.H" in ended


def test_flood_starts_above_ten_and_ends_below_five_in_ten_minutes():
    analytics = AlarmAnalytics(AnalyticsConfig(report_interval=0), 0.0, WALL)
    events = []
    for n in range(11):  # one alarm every 50 s: the 11th within 10 minutes starts the flood
        events += analytics.update(50.0 * n, WALL, [(f"A{n}", 1)])
        assert analytics.flood == (n == 10)
    assert [e.data["analysis"] for e in events] == ["flood"]
    # the window (t - 600, t] slides past the activations at 0, 50, ..., 500 s
    ended = []
    for t in range(501, 1300, 10):
        step = analytics.update(float(t), WALL, [])
        events += step
        ended += [(t, event.data["count"]) for event in step]
    assert ended == [(901, 4)]  # at 891 the window still holds 300..500 (5); at 901 only 350..500
    assert [e.data["analysis"] for e in events] == ["flood", "flood_end"]
    assert event_problems(events) == []
    assert analytics.metrics(1300.0)["floods"] == 1


def test_shelved_alarm_returns_unacknowledged_at_expiry_if_still_active():
    plant = Plant()
    plant.scan(TT102=60.0)
    plant.act("shelve", "TT102.H", duration=5.0)
    assert plant.state("TT102.H") == "SHLVD"
    for _ in range(4):
        plant.scan()
    assert plant.state("TT102.H") == "SHLVD"
    plant.scan()
    assert plant.state("TT102.H") == "UNACK"
    plant.act("shelve", "TT102.H", duration=3.0)
    plant.scan(TT102=40.0)
    plant.scan(2.0)
    assert plant.state("TT102.H") == "NORM"


def test_shelving_is_capped_and_audited():
    plant = Plant()
    plant.scan(TT102=60.0)
    with pytest.raises(ActionError, match="exceeds the maximum of 10s"):
        plant.act("shelve", "TT102.H", duration=11.0)
    with pytest.raises(ActionError, match="needs a reason"):
        plant.act("shelve", "TT102.H", duration=5.0, reason="")
    events = plant.act("shelve", "TT102.H", duration=10.0, reason="transmitter being replaced")
    audit = [e for e in events if e.kind == "audit"]
    assert len(audit) == 1
    assert audit[0].data["user"] == "alice" and audit[0].data["action"] == "shelve"
    assert audit[0].data["reason"] == "transmitter being replaced" and audit[0].data["until"] == WALL + 11.0
    assert (audit[0].data["previous"], audit[0].data["state"]) == ("UNACK", "SHLVD")
    json.dumps([e.data for e in plant.events], allow_nan=False)


def test_latched_alarm_needs_reset():
    plant = Plant()
    plant.scan(PT101=95.0)
    assert plant.state("PT101.HH") == "UNACK"
    with pytest.raises(ActionError, match="still active"):
        plant.act("reset", "PT101.HH")
    plant.scan(PT101=50.0)
    assert plant.state("PT101.HH") == "UNACK"  # latched: no return to RTNUN
    plant.act("ack", "PT101.HH")
    plant.scan()
    assert plant.state("PT101.HH") == "ACKED"
    plant.act("reset", "PT101.HH")
    assert plant.state("PT101.HH") == "NORM"
    with pytest.raises(ActionError, match="not latched"):
        plant.act("reset", "PT101.HH")


def test_ack_and_return_and_realarm():
    plant = Plant()
    for _ in range(3):
        plant.scan(PT101=82.0)
    plant.act("ack", "PT101.H")
    for _ in range(4):
        plant.scan()
    assert plant.state("PT101.H") == "ACKED"
    plant.scan()  # 5 s after the ack and still active: re-alarm
    assert plant.state("PT101.H") == "UNACK"
    plant.act("ack", "PT101.H")
    plant.scan(PT101=70.0)
    plant.scan()
    assert plant.transitions("PT101.H") == ["UNACK", "ACKED", "UNACK", "ACKED", "NORM"]
    with pytest.raises(ActionError, match="nothing to acknowledge"):
        plant.act("ack", "PT101.H")


def test_suppressed_by_design_while_unit_down_then_unack_when_still_active():
    plant = Plant()
    plant.scan(U100_RUNNING=0.0, P101_RUN=0.0)
    assert plant.state("P101_TRIP") == "DSUPR" and plant.state("PT101.L") == "DSUPR"
    plant.scan(U100_RUNNING=1.0)
    assert plant.state("P101_TRIP") == "UNACK" and plant.state("PT101.L") == "NORM"


def test_out_of_service_and_back():
    plant = Plant()
    plant.act("out_of_service", "TT102.H", reason="instrument removed")
    plant.scan(TT102=60.0)
    assert plant.state("TT102.H") == "OOSRV"
    with pytest.raises(ActionError, match="out of service"):
        plant.act("shelve", "TT102.H", duration=1.0)
    plant.act("return_to_service", "TT102.H")
    assert plant.state("TT102.H") == "UNACK"
    assert [e.data["action"] for e in plant.events if e.kind == "audit"] == ["out_of_service", "return_to_service"]


def test_bad_quality_holds_the_alarm_and_pauses_the_on_delay():
    plant = Plant()
    plant.scan(PT101=82.0)  # t=1: the 2 s on-delay starts
    plant.quality[ROWS["PT101"]] = 17
    plant.scan(PT101=50.0)  # t=2, 3: unknown, the delay pauses after 1 s
    plant.scan()
    assert plant.transitions("PT101.H") == []
    plant.quality[ROWS["PT101"]] = 0
    plant.scan(PT101=82.0)  # t=4: resumes with 1 s counted
    assert plant.transitions("PT101.H") == []
    plant.scan()  # t=5: 2 s of usable data in alarm
    assert plant.transitions("PT101.H") == ["UNACK"]
    plant.quality[ROWS["PT101"]] = 17
    for _ in range(4):  # bad for 3 s (its on-delay)
        plant.scan(PT101=0.0)
    assert plant.state("PT101.H") == "UNACK" and plant.transitions("PT101_BAD") == ["UNACK"]


def test_a_tag_not_read_yet_is_unknown_not_bad():
    """At start-up the point table holds NO_VALUE until each device's first poll: no quality alarm
    and no status_bad, and a bypass restored from the saved state is held, not ended."""
    plant = Plant()
    plant.quality[:] = 16  # Quality.NO_VALUE
    plant.values[:] = np.nan
    plant.engine.bypassed[0] = 1  # as restored: SIS-101 was bypassed, without authorization
    plant.engine.flags[0, :2] = 1
    for _ in range(5):  # longer than PT101_BAD's 3 s on-delay
        plant.scan()
    assert plant.transitions("PT101_BAD") == [] and plant.transitions("TT102_NG") == []
    assert [e for e in plant.events if e.kind == "bypass"] == []
    assert plant.engine.in_service.tolist() == [0.0, 1.0] and plant.engine.in_service_quality.tolist() == [16, 16]
    plant.quality[ROWS["PT101"]] = 17  # the driver's verdict: the device does not answer
    plant.quality[ROWS["XS101"]] = 17
    for _ in range(4):
        plant.scan()
    assert plant.transitions("PT101_BAD") == ["UNACK"]
    # still bypassed (held) and its protected PT101 now bad: blind as well
    assert [e.data["event"] for e in plant.events if e.kind == "bypass"] == ["status_bad", "measurement_bad"]


def test_expression_with_for_and_latching():
    plant = Plant()
    plant.scan(PT101=70.0, TT102=45.0, XV103=0.0)
    plant.scan()
    assert plant.transitions("RUNAWAY") == []
    plant.scan()
    assert plant.transitions("RUNAWAY") == ["UNACK"]
    plant.scan(XV103=1.0)
    assert plant.state("RUNAWAY") == "UNACK"


def test_rate_discrete_and_quality_rules():
    plant = Plant()
    for _ in range(8):
        plant.scan(TT102=20.0)
    plant.scan(TT102=30.0)  # +10 over the last 4-8 s: > 30 per minute
    assert plant.transitions("TT102_ROC") == ["UNACK"]
    plant.scan(P101_RUN=0.0)
    assert plant.transitions("P101_TRIP") == ["UNACK"]
    plant.quality[ROWS["TT102"]] = 2  # stale, uncertain: not good
    plant.scan()
    assert plant.transitions("TT102_NG") == ["UNACK"]


def test_stale_alarm_reported_once():
    plant = Plant()
    for _ in range(20):
        plant.scan(TT102=60.0)
    stale = [e.source for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "stale"]
    assert stale.count("TT102.H") == 1


def test_gas_alarms_ordered_level_two_first_then_toxic():
    plant = Plant()
    events = plant.scan(AT201=45.0, AT202=25.0)
    gas = [(e.source, e.data["level"]) for e in events if e.kind == "gas_alarm"]
    assert gas == [("AT202", 2), ("AT201", 2), ("AT202", 1), ("AT201", 1)]
    assert events[0].kind == "gas_alarm" and events[0].priority == Priority.CRITICAL
    listing = [item["id"] for item in plant.engine.alarms() if item["kind"] == "gas"]
    assert listing == ["AT202.GAS2", "AT201.GAS2", "AT202.GAS1", "AT201.GAS1"]
    ordered = order_gas_alarms([{"id": "a", "level": 1, "type": "toxic"},
                                {"id": "b", "level": 2, "type": "combustible"},
                                {"id": "c", "level": 1, "type": "combustible"},
                                {"id": "d", "level": 2, "type": "toxic"}])
    assert [item["id"] for item in ordered] == ["d", "b", "a", "c"]


def test_state_survives_a_restart():
    plant = Plant()
    plant.scan(PT101=95.0, TT102=60.0)
    plant.act("shelve", "TT102.H", duration=8.0)
    plant.act("ack", "PT101.HH")
    saved = json.loads(json.dumps(plant.engine.state_dict()))
    fresh = build()
    notes = fresh.restore(saved, now_monotonic=500.0, now_wall=WALL + plant.now + 3.0)
    assert notes == []
    states = {item["id"]: item for item in fresh.alarms()}
    assert states["PT101.HH"]["state"] == "ACKED" and states["PT101.HH"]["latched"]
    assert states["TT102.H"]["state"] == "SHLVD"
    values, quality = point_table(PT101=95.0, TT102=60.0)
    assert [e for e in fresh.evaluate(values, quality, 504.0, WALL + plant.now + 7.0)
            if e.kind != "analytics"] == []  # nothing raised again
    events = fresh.evaluate(values, quality, 505.0, WALL + plant.now + 8.0)  # 8 s shelf, 3 + 5 later
    assert [(e.data["alarm"], e.data["state"]) for e in events if e.kind == "alarm"] == [("TT102.H", "UNACK")]


def test_reference_backend_gives_the_same_scenario():
    runs = []
    for backend in ("numba", "reference"):
        plant = Plant(backend)
        for value in (82.0, 82.0, 82.0, 95.0, 50.0, 15.0, 5.0, 5.0, 50.0):
            plant.scan(PT101=value, TT102=value / 2)
        runs.append([(e.kind, e.message) for e in plant.events])
    assert runs[0] == runs[1] and runs[0]


def test_engine_with_only_tag_alarms_and_unknown_alarm_hint():
    engine = RuleEngine.build(RulesConfig(), ROWS, len(TAGS), [TagAlarmConfig("PT101", (
        LimitAlarm("H", 80.0, 0.0, behaviour()),))], INFO, now_monotonic=0.0, now_wall=WALL)
    values, quality = point_table(PT101=81.0)
    assert [e.data["state"] for e in engine.evaluate(values, quality, 1.0, WALL)] == ["UNACK"]
    with pytest.raises(ActionError, match="did you mean 'PT101.H'"):
        engine.act("ack", "PT101.HX", "alice")
    with pytest.raises(TypeError):
        engine.evaluate(values.astype(np.float32), quality, 2.0, WALL)
    with pytest.raises(ValueError, match="duplicate alarm ids"):
        RuleEngine.build(RulesConfig(gas=(GasChannel("PT101", "combustible", "", 10, 20),) * 2), ROWS, len(TAGS))


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_status_counts_alarms_by_priority_and_state_and_lists_bypassed_interlocks(backend):
    plant = Plant(backend)
    plant.scan(PT101=95.0, TT102=60.0, XS101=1.0)  # HH (high) and TT102.H (low) active; SIS-101 bypassed
    plant.act("ack", "TT102.H")
    plant.scan()  # counts are as of the last scan
    status = plant.engine.status()
    listed = Counter((item["priority"], item["state"]) for item in plant.engine.alarms() if item["state"] != "NORM")
    assert status["states"] == sorted((p, s, n) for (p, s), n in listed.items())
    assert ("high", "UNACK", 1) in status["states"] and ("low", "ACKED", 1) in status["states"]
    assert status["counts"]["unacknowledged"] == sum(n for _, s, n in status["states"] if s == "UNACK")
    assert status["counts"]["active"] == sum(item["active"] for item in plant.engine.alarms(include_normal=True))
    assert status["counts"]["alarms"] == len(plant.engine.alarms(include_normal=True))
    assert [item["id"] for item in status["bypassed"]] == ["SIS-101"] and status["interlocks"] == 2
    assert status["priorities"]["critical"] > status["priorities"]["low"]
    assert plant.engine.state_counts() == status["states"]


def test_flood_is_counted_per_production_unit_as_well_as_gateway_wide():
    units = {f"U1_{n}": "U1" for n in range(11)} | {f"U2_{n}": "U2" for n in range(4)}
    analytics = AlarmAnalytics(AnalyticsConfig(report_interval=0), 0.0, WALL, units)
    events = []
    for n in range(4):  # U2: 4 activations, well within its limits, but they count gateway-wide
        events += analytics.update(10.0 * n, WALL, [(f"U2_{n}", 1)])
    for n in range(7):
        events += analytics.update(100.0 + 10.0 * n, WALL, [(f"U1_{n}", 1), ("NO_UNIT", 1)] if n == 0 else
                                   [(f"U1_{n}", 1)])
    floods = [(e.source, e.data["scope"], e.data["count"]) for e in events if e.data["analysis"] == "flood"]
    assert floods == [("alarms", "gateway", 11)], "4 + 1 + 6 = 11 gateway-wide, U1 at 7 not above 10 yet"
    for n in range(7, 11):
        events += analytics.update(100.0 + 10.0 * n, WALL, [(f"U1_{n}", 1)])
    floods = [(e.source, e.data.get("unit"), e.data["count"]) for e in events if e.data["analysis"] == "flood"]
    assert floods[1:] == [("U1", "U1", 11)]
    metrics = analytics.metrics(210.0)["units"]
    assert metrics["U1"] == {"flood": True, "floods": 1, "in_window": 11} and metrics["U2"]["flood"] is False
    ended = []
    for t in range(210, 900, 10):
        ended += [(e.source, e.data["scope"]) for e in analytics.update(float(t), WALL, [])
                  if e.data["analysis"] == "flood_end"]
    assert ("U1", "unit") in ended and ("alarms", "gateway") in ended
