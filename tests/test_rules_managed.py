"""Highly managed alarms: shelving or out of service only under an authorization (permit, four eyes,
maximum duration), listed with it, audited, and ended with the shelf or its own expiry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_rules_fixtures import INFO, ROWS, TAGS, plant_rules

from rules.engine import RuleEngine
from rules.isa import ActionError
from rules.model import AlarmBehaviour, GasChannel
from tests.uplinkschemas import event_problems

WALL = 1_700_000_000.0
BACKENDS = ["numba", "reference"]
AUTH = {"permit": "PTW-7", "approved_by": "Shift.Lead"}


def build(backend: str) -> RuleEngine:
    rules, tag_alarms = plant_rules()
    gas = (GasChannel("AT201", "combustible", "methane", 20.0, 40.0, deadband=1.0,
                      behaviour2=AlarmBehaviour(priority="critical", highly_managed=True)),)
    rules = dataclasses.replace(rules, gas=gas, highly_managed_max=7200.0, shelving_max=4 * 3600.0)
    return RuleEngine.build(rules, ROWS, len(TAGS), tag_alarms, INFO, backend=backend, now_monotonic=0.0,
                            now_wall=WALL)


def scan(engine: RuleEngine, now: float, **values) -> list:
    value = np.zeros(len(TAGS))
    value[[ROWS["U100_RUNNING"], ROWS["XS102"], ROWS["P101_RUN"]]] = 1.0
    value[ROWS["PT101"]] = 50.0
    for name, v in values.items():
        value[ROWS[name]] = v
    events = engine.evaluate(value, np.zeros(len(TAGS), np.uint8), now, WALL + now)
    assert event_problems(events) == []
    return events


def listed(engine: RuleEngine, alarm: str) -> dict:
    return next(item for item in engine.alarms(include_normal=True) if item["id"] == alarm)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw, refusal", [
    ({"duration": 600.0}, "AT201.GAS2 is a highly managed alarm: shelving it needs an authorization with a permit, "
                          "an approver"),
    ({"duration": 600.0, "permit": "PTW-7"}, "needs an authorization with an approver"),
    ({"duration": 600.0, "permit": "PTW-7", "approved_by": "ALICE"}, "the approver must be someone other than the "
                                                                     "requester"),
    ({"duration": 600.0, "permit": "PTW-7", "approved_by": "bob", "requested_by": "Bob"}, "the approver must be "
                                                                                          "someone other"),
    ({"duration": 3 * 3600.0, **AUTH}, "shelving the highly managed alarm AT201.GAS2 for 3h exceeds the maximum of "
                                       "2h (rules.shelving.highly_managed_max)"),
])
def test_shelving_a_highly_managed_alarm_without_a_full_authorization_is_refused(backend, kw, refusal):
    engine = build(backend)
    scan(engine, 1.0, AT201=45.0)
    with pytest.raises(ActionError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        engine.act("shelve", "AT201.GAS2", "alice", "detector under test", now_monotonic=2.0, now_wall=WALL + 2.0,
                   **kw)
    assert listed(engine, "AT201.GAS2")["state"] == "UNACK" and listed(engine, "AT201.GAS2")["authorization"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_authorized_shelf_is_listed_audited_saved_and_ends_with_the_shelf(backend):
    engine = build(backend)
    scan(engine, 1.0, AT201=45.0)
    events = engine.act("shelve", "AT201.GAS2", "alice", "detector under test", duration=600.0,
                        now_monotonic=2.0, now_wall=WALL + 2.0, **AUTH)
    audit = next(event for event in events if event.kind == "audit")
    assert audit.data["authorization"] == {"alarm": "AT201.GAS2", "action": "shelve", "permit": "PTW-7",
                                           "approved_by": "Shift.Lead", "requested_by": "alice",
                                           "start": WALL + 2.0, "duration": 600.0, "until": WALL + 602.0}
    item = listed(engine, "AT201.GAS2")
    assert (item["state"], item["class"], item["authorization"]["permit"]) == ("SHLVD", "highly_managed", "PTW-7")
    assert listed(engine, "AT201.GAS1")["class"] == "standard"
    restored = build(backend)
    restored.restore(engine.state_dict(), now_monotonic=10.0, now_wall=WALL + 10.0)
    assert listed(restored, "AT201.GAS2")["authorization"]["until"] == WALL + 602.0
    scan(restored, 700.0, AT201=45.0)  # the shelf expired: the authorization with it
    assert listed(restored, "AT201.GAS2")["state"] == "UNACK"
    assert listed(restored, "AT201.GAS2")["authorization"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_authorized_out_of_service_returns_by_itself_when_it_runs_out(backend):
    engine = build(backend)
    scan(engine, 1.0)
    with pytest.raises(ActionError, match="needs an authorization with a permit, an approver, a duration"):
        engine.act("out_of_service", "AT201.GAS2", "alice", "detector removed", now_monotonic=2.0)
    engine.act("out_of_service", "AT201.GAS2", "alice", "detector removed", duration=3600.0, now_monotonic=2.0,
               now_wall=WALL + 2.0, **AUTH)
    scan(engine, 3000.0, AT201=45.0)
    assert listed(engine, "AT201.GAS2")["state"] == "OOSRV"
    events = scan(engine, 3602.0, AT201=45.0)
    audit = next(event for event in events if event.kind == "audit")
    assert (audit.data["user"], audit.data["action"], audit.data["state"]) == ("gatewayd", "return_to_service",
                                                                               "UNACK")
    assert "PTW-7" in audit.data["reason"] and listed(engine, "AT201.GAS2")["state"] == "UNACK"


@pytest.mark.parametrize("backend", BACKENDS)
def test_standard_alarms_shelve_as_before(backend):
    engine = build(backend)
    scan(engine, 1.0, AT201=45.0)
    engine.act("shelve", "AT201.GAS1", "alice", "known", duration=600.0, now_monotonic=2.0, now_wall=WALL + 2.0)
    assert listed(engine, "AT201.GAS1")["state"] == "SHLVD" and listed(engine, "AT201.GAS1")["authorization"] is None


def test_gas_level_2_is_highly_managed_by_default_and_any_alarm_by_class():
    from test_rules_config import parse_rules

    rules, issues = parse_rules("rules:\n  shelving: {highly_managed_max: 1h}\n  gas:\n"
                                "    - {tag: AT201, type: combustible, level1: 20, level2: 40}\n"
                                "    - {tag: AT202, type: toxic, oel: 10, level1: 7, level2: 14,\n"
                                "       level2_class: standard}\n"
                                "  alarms:\n    - {id: P101_STOP, discrete: {tag: P101_RUN, state: 0}, "
                                "class: highly_managed}\n")
    assert issues == []
    assert [(c.behaviour1.highly_managed, c.behaviour2.highly_managed) for c in rules.gas] == [(False, True),
                                                                                              (False, False)]
    assert rules.alarms[0].behaviour.highly_managed and rules.highly_managed_max == 3600.0
    in_code = GasChannel("AT201", "combustible", "methane", 20.0, 40.0)  # a config built in code: the same default
    assert (in_code.behaviour1.highly_managed, in_code.behaviour2.highly_managed) == (False, True)
    _, issues = parse_rules("rules:\n  alarms:\n    - {id: A, discrete: {tag: P101_RUN, state: 0}, class: vip}\n")
    assert any("rules.alarms[0].class" in issue and "'vip'" in issue for issue in issues), issues


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_periodic_hidden_report_lists_a_shelved_highly_managed_alarm_with_its_authorization(backend):
    engine = build(backend)
    scan(engine, 1.0, AT201=45.0)
    engine.act("shelve", "AT201.GAS2", "alice", "detector under test", duration=7000.0, now_monotonic=2.0,
               now_wall=WALL + 2.0, **AUTH)
    interval = engine.rules.analytics.shelved_report_interval
    reports = [event for event in scan(engine, 2.0 + interval, AT201=45.0)
               if event.kind == "analytics" and event.data["analysis"] == "hidden_report"]
    [gas2] = [item for item in reports[0].data["alarms"] if item["id"] == "AT201.GAS2"]
    assert (gas2["class"], gas2["authorization"]["permit"], gas2["authorization"]["approved_by"]) == \
        ("highly_managed", "PTW-7", "Shift.Lead")
