"""Scenarios of issue 10 (alarms and interlock supervision that stay sighted when instruments fail),
driven through the engine with explicit time on both backends."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_rules_fixtures import ROWS, behaviour, expression, plant_rules
from test_rules_scenarios import WALL, Plant

from rules.model import AlarmRule, ExpressionSpec, Interlock, LimitAlarm, Suppression, TagAlarmConfig

BACKENDS = ("numba", "reference")
BAD = 20  # Quality: a bad value (comm failure, ...)


def redundant_plant(backend, bad_input_votes="tripped"):
    """Transmitters A = PT101 and B = FT101 on one vessel (3.6 MPa high-high); C = TT102 a third one."""
    rules, tag_alarms = plant_rules()
    alarms = (
        AlarmRule("A_OR_B", ExpressionSpec(expression("PT101 >= 3.6 or FT101 >= 3.6")), behaviour("critical")),
        AlarmRule("MAX_AB", ExpressionSpec(expression("max(PT101, FT101) >= 3.6")), behaviour("critical")),
        AlarmRule("A_AND_B", ExpressionSpec(expression("PT101 >= 3.6 and FT101 >= 3.6")), behaviour("high")),
        AlarmRule("RATIO", ExpressionSpec(expression("PT101 / FT101")), behaviour("low")),
    )
    interlocks = (Interlock("SIS-101", "U100", 100.0, bypass_tags=("XS101",), protects=("PT101", "FT101"),
                            trip=expression("PT101 >= 3.6 or FT101 >= 3.6")),
                  Interlock("SIS-2OO3", "U100", 100.0, bypass_tags=("XS102",), protects=("PT101", "FT101", "TT102"),
                            trip=expression("vote(2, PT101 >= 3.6, FT101 >= 3.6, TT102 >= 3.6)"),
                            bad_input_votes=bad_input_votes))
    rules = dataclasses.replace(rules, alarms=alarms, interlocks=interlocks, suppressions=())
    plant = Plant(backend, rules=rules, tag_alarms=())
    plant.scan(PT101=1.0, FT101=1.0, TT102=1.0, XS101=0.0, XS102=0.0)
    return plant


def bypass_events(plant, interlock):
    return [e.data["event"] for e in plant.events if e.kind == "bypass" and e.source == interlock]


@pytest.mark.parametrize("backend", BACKENDS)
def test_redundant_transmitter_alarms_when_one_has_failed(backend):
    plant = redundant_plant(backend)
    plant.quality[ROWS["FT101"]] = BAD
    plant.scan(PT101=3.9)
    assert plant.state("A_OR_B") == "UNACK" and plant.state("MAX_AB") == "UNACK"
    assert plant.state("A_AND_B") == "NORM"  # undecided: held
    plant.scan(PT101=1.0)  # A alone now says "not high" for `and`, but `or` / max stay undecided: held
    assert plant.state("A_OR_B") == "UNACK" and plant.state("MAX_AB") == "UNACK"
    plant.quality[ROWS["FT101"]] = 0
    plant.scan(FT101=1.0)
    assert plant.state("A_OR_B") == "RTNUN" and plant.state("MAX_AB") == "RTNUN"


@pytest.mark.parametrize("backend", BACKENDS)
def test_and_clears_on_the_partner_that_decides(backend):
    plant = redundant_plant(backend)
    plant.scan(PT101=3.9, FT101=3.9)
    assert plant.state("A_AND_B") == "UNACK"
    plant.quality[ROWS["FT101"]] = BAD
    plant.scan(PT101=1.0)  # false and unknown is false
    assert plant.state("A_AND_B") == "RTNUN"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_result_is_unknown_and_holds_the_alarm(backend):
    plant = redundant_plant(backend)
    assert plant.state("RATIO") == "UNACK"  # 1 / 1: true
    plant.scan(PT101=0.0, FT101=0.0)  # 0 / 0: NaN, unknown: held, not cleared
    assert plant.state("RATIO") == "UNACK"
    plant.scan(PT101=0.0, FT101=1.0)  # 0: false
    assert plant.state("RATIO") == "RTNUN"


@pytest.mark.parametrize("backend", BACKENDS)
def test_trip_while_bypassed_when_a_alone_decides_the_trip(backend):
    plant = redundant_plant(backend)
    plant.scan(XS101=1.0)
    plant.quality[ROWS["FT101"]] = BAD
    plant.scan(PT101=3.9)
    assert "trip_while_bypassed" in bypass_events(plant, "SIS-101")
    trip = next(e for e in plant.events if e.kind == "bypass" and e.data["event"] == "trip_while_bypassed")
    assert trip.priority == 4  # critical


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("mode", "trips"), [("tripped", True), ("healthy", False)])
def test_two_out_of_three_vote_counts_a_bad_input_as_configured(backend, mode, trips):
    plant = redundant_plant(backend, mode)
    plant.scan(XS102=1.0)
    plant.quality[ROWS["FT101"]] = BAD
    plant.scan(PT101=3.9)  # one vote for the trip, one bad input
    assert ("trip_while_bypassed" in bypass_events(plant, "SIS-2OO3")) == trips
    plant.scan(TT102=3.9)  # two healthy votes: trips either way
    assert "trip_while_bypassed" in bypass_events(plant, "SIS-2OO3")


# ---------------------------------------------------------------- a latch is lost only by a reset

def latched_plant(backend):
    """PT101.HH (90, latching) also in a suppression group, so every way out of SHLVD/DSUPR/OOSRV is tried."""
    rules, tag_alarms = plant_rules()
    rules = dataclasses.replace(rules, suppressions=(Suppression("U100_DOWN", expression("not U100_RUNNING"),
                                                                 ("PT101.HH",)),))
    return Plant(backend, rules=rules, tag_alarms=tag_alarms)


def latch_then_clear(plant):
    plant.scan(PT101=95.0)
    plant.scan(PT101=50.0)
    assert plant.state("PT101.HH") == "UNACK" and latched(plant, "PT101.HH")


def latched(plant, alarm):
    return next(item["latched"] for item in plant.engine.alarms(include_normal=True) if item["id"] == alarm)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("episode", ["unshelve", "shelf_expiry", "out_of_service", "suppression"])
def test_a_latched_alarm_stays_latched_through_every_episode(backend, episode):
    plant = latched_plant(backend)
    latch_then_clear(plant)
    plant.act("ack", "PT101.HH")
    if episode == "unshelve":
        plant.act("shelve", "PT101.HH", duration=5.0)
        plant.scan()
        plant.act("unshelve", "PT101.HH")
    elif episode == "shelf_expiry":
        plant.act("shelve", "PT101.HH", duration=2.0)
        plant.scan()
        plant.scan(2.0)
    elif episode == "out_of_service":
        plant.act("out_of_service", "PT101.HH", reason="transmitter swap")
        plant.scan()
        plant.act("return_to_service", "PT101.HH")
    else:
        plant.scan(U100_RUNNING=0.0)
        assert plant.state("PT101.HH") == "DSUPR"
        plant.scan(U100_RUNNING=1.0)
    plant.scan()
    assert plant.state("PT101.HH") == "UNACK" and latched(plant, "PT101.HH")  # back annunciated, not NORM
    plant.act("ack", "PT101.HH")
    plant.act("reset", "PT101.HH")
    plant.scan()
    assert plant.state("PT101.HH") == "NORM" and not latched(plant, "PT101.HH")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_occurrence_while_shelved_latches_and_is_counted(backend):
    plant = latched_plant(backend)
    plant.act("shelve", "PT101.HH", duration=10.0)
    plant.scan(PT101=95.0)
    plant.scan(PT101=50.0)
    assert plant.state("PT101.HH") == "SHLVD" and latched(plant, "PT101.HH")
    plant.act("unshelve", "PT101.HH")
    assert plant.state("PT101.HH") == "UNACK"
    item = next(item for item in plant.engine.alarms() if item["id"] == "PT101.HH")
    assert item["latched"] and item["hidden_occurrences"] == 1


# ---------------------------------------------------------------- delays pause on bad quality

def delayed_plant(backend):
    rules, _ = plant_rules()
    tag_alarms = (TagAlarmConfig("TT102", (LimitAlarm("H", 50.0, 0.0, behaviour(on_delay=60.0, off_delay=30.0)),)),)
    return Plant(backend, rules=rules, tag_alarms=tag_alarms)


@pytest.mark.parametrize("backend", BACKENDS)
def test_intermittent_bad_quality_pauses_the_on_and_off_delay(backend):
    plant = delayed_plant(backend)

    def run(value, seconds):
        """One scan a second; every 20th has bad quality."""
        for n in range(seconds):
            plant.quality[ROWS["TT102"]] = BAD if n % 20 == 19 else 0
            plant.scan(TT102=value)

    run(60.0, 62)  # 59 s of the 62 usable (the last scan of each 20 is bad): not yet
    assert plant.state("TT102.H") == "NORM"
    run(60.0, 4)  # restarting the delay on each bad scan would never get there
    assert plant.transitions("TT102.H") == ["UNACK"]
    run(40.0, 31)  # the 30 s off-delay: 29 usable scans after the first
    assert plant.state("TT102.H") == "UNACK"
    run(40.0, 3)
    assert plant.transitions("TT102.H") == ["UNACK", "RTNUN"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_condition_that_clears_during_the_pause_cancels_the_delay(backend):
    plant = delayed_plant(backend)
    for _ in range(50):
        plant.scan(TT102=60.0)
    plant.quality[ROWS["TT102"]] = BAD
    plant.scan(5.0)
    plant.quality[ROWS["TT102"]] = 0
    plant.scan(TT102=40.0)  # back below the limit: the delay is over
    for _ in range(15):
        plant.scan(TT102=60.0)  # a new delay of 60 s starts now
    assert plant.state("TT102.H") == "NORM"


# ---------------------------------------------------------------- suppression fails open

@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unknown_unit_state_does_not_suppress(backend):
    plant = Plant(backend)
    plant.scan(U100_RUNNING=0.0, P101_RUN=0.0)
    assert plant.state("P101_TRIP") == "DSUPR" and plant.state("PT101.L") == "DSUPR"
    plant.quality[ROWS["U100_RUNNING"]] = BAD
    plant.scan()
    assert plant.state("P101_TRIP") == "UNACK" and plant.state("PT101.L") == "NORM"


# ---------------------------------------------------------------- occurrences while hidden

@pytest.mark.parametrize("backend", BACKENDS)
def test_occurrences_while_shelved_suppressed_or_out_of_service_are_counted_and_persisted(backend):
    plant = Plant(backend)
    plant.act("shelve", "TT102.H", duration=10.0)
    for value in (60.0, 40.0, 60.0, 40.0, 60.0):
        plant.scan(TT102=value)
    plant.act("out_of_service", "PT101.HH", reason="swap")
    plant.scan(PT101=95.0)
    plant.scan(U100_RUNNING=0.0, PT101=15.0)  # PT101.L occurs while suppressed by design
    listing = {item["id"]: item for item in plant.engine.alarms()}
    assert listing["TT102.H"]["hidden_occurrences"] == 3
    assert listing["PT101.HH"]["hidden_occurrences"] == 1
    assert listing["PT101.L"]["hidden_occurrences"] == 1 and listing["PT101.L"]["state"] == "DSUPR"
    fresh = Plant(backend)
    fresh.engine.restore(json.loads(json.dumps(plant.engine.state_dict())), now_monotonic=plant.now,
                         now_wall=WALL + plant.now)
    assert {item["id"]: item["hidden_occurrences"] for item in fresh.engine.alarms()
            if item["hidden_occurrences"]} == {"TT102.H": 3, "PT101.HH": 1, "PT101.L": 1}
    plant.act("unshelve", "TT102.H")
    plant.act("shelve", "TT102.H", duration=10.0)  # a new episode counts from zero
    assert next(item for item in plant.engine.alarms() if item["id"] == "TT102.H")["hidden_occurrences"] == 0


# ---------------------------------------------------------------- bypassed and blind

@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interlock_bypassed_while_its_measurement_is_bad_raises_measurement_bad(backend):
    plant = Plant(backend)
    plant.quality[ROWS["PT101"]] = BAD
    plant.scan()
    assert bypass_events(plant, "SIS-101") == []  # bad but in service: the interlock still acts
    plant.scan(XS101=1.0)
    raised = [e for e in plant.events if e.kind == "bypass" and e.data["event"] == "measurement_bad"]
    assert len(raised) == 1 and raised[0].priority == 3 and raised[0].data["protects"] == ["PT101"]
    assert "measurement_bad" in next(item["flags"] for item in plant.engine.interlocks() if item["id"] == "SIS-101")
    plant.quality[ROWS["PT101"]] = 0
    plant.scan()
    assert bypass_events(plant, "SIS-101")[-1] == "measurement_bad_cleared"
    plant.quality[ROWS["TT102"]] = BAD  # SIS-102 lists no protects: its trip condition's tags count
    plant.scan(XS102=0.0)
    assert "measurement_bad" in bypass_events(plant, "SIS-102")


# ---------------------------------------------------------------- gas alarms are never suppressed by process state

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_suppression_group_of_every_alarm_does_not_silence_gas(backend):
    rules, tag_alarms = plant_rules()
    rules = dataclasses.replace(rules, suppressions=(Suppression("U100_DOWN", expression("not U100_RUNNING"),
                                                                 ("*",)),))
    plant = Plant(backend, rules=rules, tag_alarms=tag_alarms)
    plant.scan(U100_RUNNING=0.0, AT201=45.0, P101_RUN=0.0)
    assert plant.state("AT201.GAS2") == "UNACK" and plant.state("AT201.GAS1") == "UNACK"
    assert plant.state("P101_TRIP") == "DSUPR"  # the process alarms are suppressed
    assert plant.state("U100_DOWN.STATE_BAD") == "NORM"  # "*" does not take the group's own alarm either


def test_a_suppression_pattern_matching_only_gas_alarms_is_refused():
    from test_rules_config import parse_rules

    rules, issues = parse_rules("rules:\n  gas:\n    - {tag: AT201, type: combustible, level1: 20, level2: 40}\n"
                                "  suppression:\n    - id: S\n      when: not U100_RUNNING\n      alarms: [AT201.*]\n")
    assert rules is None
    assert any(issue.startswith("rules.yaml:7: rules.suppression[0].alarms: 'AT201.*' matches only gas alarms")
               for issue in issues), issues
    rules, issues = parse_rules("rules:\n  alarms:\n    - id: S.STATE_BAD\n      when: PT101 > 1\n"
                                "  suppression:\n    - id: S\n      when: not U100_RUNNING\n      alarms: ['*']\n")
    assert any("rules.suppression[0].id: the suppression's alarm id 'S.STATE_BAD' is already used" in issue
               for issue in issues), issues


# ---------------------------------------------------------------- an unknown unit state raises an alarm

@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unknown_unit_state_raises_the_groups_state_bad_alarm(backend):
    plant = Plant(backend)
    plant.scan(U100_RUNNING=0.0)
    assert plant.state("U100_DOWN.STATE_BAD") == "NORM"
    plant.quality[ROWS["U100_RUNNING"]] = BAD
    plant.scan()
    assert plant.state("U100_DOWN.STATE_BAD") == "UNACK" and plant.state("PT101.L") == "NORM"
    item = next(item for item in plant.engine.alarms() if item["id"] == "U100_DOWN.STATE_BAD")
    assert (item["kind"], item["tag"], item["priority"]) == ("suppression_state", "U100_RUNNING", "high")
    plant.quality[ROWS["U100_RUNNING"]] = 0
    plant.scan()
    assert plant.state("U100_DOWN.STATE_BAD") == "RTNUN" and plant.state("PT101.L") == "DSUPR"


# ---------------------------------------------------------------- the periodic shelved / suppressed report

@pytest.mark.parametrize("backend", BACKENDS)
def test_the_periodic_report_lists_hidden_alarms_with_their_occurrences(backend):
    rules, tag_alarms = plant_rules()
    rules = dataclasses.replace(rules, analytics=dataclasses.replace(rules.analytics, shelved_report_interval=8.0))
    plant = Plant(backend, rules=rules, tag_alarms=tag_alarms)
    plant.act("shelve", "TT102.H", duration=10.0)
    for value in (60.0, 40.0, 60.0, 40.0):
        plant.scan(TT102=value)
    plant.scan(U100_RUNNING=0.0)
    reports = [e for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "hidden_report"]
    assert reports == []
    for _ in range(3):
        plant.scan()  # t = 8 s
    reports = [e for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "hidden_report"]
    assert len(reports) == 1
    listed = {item["id"]: item for item in reports[0].data["alarms"]}
    assert listed["TT102.H"]["state"] == "SHLVD" and listed["TT102.H"]["hidden_occurrences"] == 2
    assert {"PT101.L", "PT101.LL", "FT101_DEV", "P101_TRIP"} <= {i for i, item in listed.items()
                                                                  if item["state"] == "DSUPR"}
    assert reports[0].data["occurrences"] == 2 and "TT102.H 2" in reports[0].message
    for _ in range(8):
        plant.scan()
    assert len([e for e in plant.events if e.kind == "analytics" and e.data["analysis"] == "hidden_report"]) == 2
