"""Scenarios of issue 10 (alarms and interlock supervision that stay sighted when instruments fail),
driven through the engine with explicit time on both backends."""

from __future__ import annotations

import dataclasses

import pytest
from test_rules_fixtures import ROWS, behaviour, expression, plant_rules
from test_rules_scenarios import Plant

from rules.model import AlarmRule, ExpressionSpec, Interlock

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
