"""Trip demand capture: trip events with values and first-out, history around the trip, final-element
response, consequential-alarm suppression, on both backends with explicit time and read times."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_rules_fixtures import INFO, ROWS, TAGS, expression, plant_rules

from core.types import Priority, Quality
from rules.engine import RuleEngine
from rules.model import ConsequentialSuppression, FinalElement, Interlock, TripHistory
from tests.uplinkschemas import event_problems

WALL = 1_700_000_000.0
BACKENDS = ["numba", "reference"]
SHORT_HISTORY = TripHistory(5.0, 3.0, 1.0)


class Site:
    """The fixture plant with one interlock under test, a clock and per-row read times."""

    def __init__(self, backend: str, interlock: Interlock, trip_history: TripHistory = SHORT_HISTORY,
                 stamp_skew: float | None = None):
        rules, tag_alarms = plant_rules()
        rules = dataclasses.replace(rules, interlocks=(interlock,), trip_history=trip_history)
        self.engine = RuleEngine.build(rules, ROWS, len(TAGS), tag_alarms, INFO, backend=backend, now_monotonic=0.0,
                                       now_wall=WALL)
        self.values = np.zeros(len(TAGS))
        self.values[[ROWS["U100_RUNNING"], ROWS["XS102"], ROWS["P101_RUN"]]] = 1.0
        self.values[ROWS["PT101"]] = 50.0
        self.quality = np.zeros(len(TAGS), np.uint8)
        self.read = np.zeros(len(TAGS))
        # with a skew, the engine is also handed the reads' wall stamps, `skew` seconds off the scan's clock
        self.stamp_skew = stamp_skew
        self.walls = None if stamp_skew is None else np.zeros(len(TAGS))
        self.now = 0.0
        self.events = []

    def scan(self, seconds: float = 1.0, reads: dict[str, float] | None = None, **values) -> list:
        """Advance the clock; every tag given is read `reads[tag]` seconds before the scan (default 0.5)."""
        self.now += seconds
        for name, value in values.items():
            self.values[ROWS[name]] = value
        for name in TAGS:
            if name in values or name in (reads or {}):
                self.read[ROWS[name]] = self.now - (reads or {}).get(name, 0.5)
                if self.walls is not None:
                    self.walls[ROWS[name]] = WALL + self.read[ROWS[name]] + self.stamp_skew
        events = self.engine.evaluate(self.values, self.quality, self.now, WALL + self.now, self.read, self.walls)
        assert event_problems(events) == []
        self.events += events
        return events

    def of(self, kind: str) -> list:
        return [event for event in self.events if event.kind == kind]


def interlock(**kw) -> Interlock:
    base = dict(id="SIS-101", unit="U100", max_bypass=10.0, bypass_tags=("XS101",), protects=("PT101",),
                trip=expression("PT101 >= 85 or TT102 > 70"))
    base.update(kw)
    return Interlock(**base)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trip_event_carries_values_qualities_and_first_out_by_read_time_within_one_scan(backend):
    site = Site(backend, interlock())
    site.scan(PT101=80.0, TT102=40.0)
    assert site.of("trip") == []
    site.quality[ROWS["TT102"]] = Quality.UNCERTAIN
    site.scan(PT101=86.0, TT102=75.0, reads={"PT101": 0.2, "TT102": 0.7})  # TT102 was read first
    [trip] = site.of("trip")
    assert trip.source == "SIS-101" and trip.priority == Priority.HIGH
    assert [cause["cause"] for cause in trip.data["first_out"]] == ["TT102 > 70", "PT101 >= 85"]
    assert trip.data["first_out"][0]["since"] == pytest.approx(WALL + 2.0 - 0.7)
    assert trip.data["values"]["PT101"] == {"value": 86.0, "quality": 0, "read_at": pytest.approx(WALL + 1.8)}
    assert trip.data["values"]["TT102"]["quality"] == Quality.UNCERTAIN
    assert trip.data["found_at_start"] is False and trip.message.startswith("interlock SIS-101 tripped: TT102 > 70")
    site.scan(PT101=87.0)
    assert len(site.of("trip")) == 1, "a trip condition that stays true is one demand"


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_out_keeps_the_cause_that_came_true_scans_before_the_trip(backend):
    site = Site(backend, interlock(trip=expression("PT101 >= 85 and TT102 > 70"),
                                   causes=(expression("PT101 >= 85"), expression("TT102 > 70"))))
    site.scan(PT101=50.0, TT102=40.0)
    site.scan(PT101=90.0, reads={"PT101": 0.9})
    site.scan()
    assert site.of("trip") == []
    site.scan(TT102=80.0, reads={"TT102": 0.1})
    [trip] = site.of("trip")
    assert [(c["cause"], c["since"]) for c in trip.data["first_out"]] == [
        ("PT101 >= 85", pytest.approx(WALL + 2.0 - 0.9)), ("TT102 > 70", pytest.approx(WALL + 4.0 - 0.1))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_holds_every_distinct_read_from_before_to_after_the_trip(backend):
    site = Site(backend, interlock(history=TripHistory(4.0, 3.0)))
    for n in range(8):
        site.scan(PT101=60.0 + n)  # reads at 0.5, 1.5, ... 7.5
    site.scan(PT101=90.0)  # trip at t=9, PT101 read at 8.5
    assert site.of("trip_history") == []
    site.scan(PT101=91.0)
    site.scan()  # PT101 not read again: one read, not two
    assert site.of("trip_history") == []
    site.scan(PT101=92.0)  # t=12: the window of 3 s after the trip is complete
    [history] = site.of("trip_history")
    trip = site.of("trip")[0]
    assert history.data["trip_id"] == trip.data["trip_id"] == trip.data["history"]["trip_id"]
    points = history.data["tags"]["PT101"]
    assert [(round(t - WALL, 3), v) for t, v, q in points] == [(5.5, 65.0), (6.5, 66.0), (7.5, 67.0), (8.5, 90.0),
                                                               (9.5, 91.0), (11.5, 92.0)]
    assert set(history.data["tags"]) == {"PT101", "TT102"} and history.data["columns"] == ["read_at", "value",
                                                                                             "quality"]
    site.scan(PT101=50.0)
    assert len(site.of("trip_history")) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_keeps_every_read_of_a_tag_polled_slower_than_the_interval_however_late_the_scans(backend):
    """Reads every second, sampled at 0.75 s: each read must be in the history even when the scan that sees
    one comes late (a loaded machine) and the scan of the next one comes on time, less than an interval later."""
    site = Site(backend, interlock(history=TripHistory(30.0, 1.0)), trip_history=TripHistory(interval=0.75))
    site.scan(seconds=0.55, PT101=60.0, reads={"PT101": 0.05})  # read at 0.5
    lags = [0.45, 0.05] * 6
    for n, lag in enumerate(lags, start=1):  # read at n + 0.5, seen `lag` later
        site.scan(seconds=(n + 0.5 + lag) - site.now, PT101=60.0 + n, reads={"PT101": lag})
    site.scan(seconds=(len(lags) + 1.5 + 0.05) - site.now, PT101=90.0, reads={"PT101": 0.05})  # the trip
    site.scan(seconds=1.0)
    [history] = site.of("trip_history")
    assert [(round(t - WALL, 3), v) for t, v, _ in history.data["tags"]["PT101"]] == [
        (n + 0.5, 60.0 + n) for n in range(len(lags) + 1)] + [(len(lags) + 1.5, 90.0)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_trip_records_carry_the_tables_own_wall_stamps_of_the_reads(backend):
    """The point table stamps each read on the wall clock when it is written (the time its sample carries
    upstream); a conversion at the scan, with another wall/monotonic pair, can differ from it by however long
    a loaded machine kept a thread between two clock calls. Here the stamps are 7 ms off the scan's clock:
    the trip's values, its first-out and its history carry the stamps themselves."""
    site = Site(backend, interlock(history=TripHistory(4.0, 2.0)), stamp_skew=0.007)
    site.scan(PT101=60.0, TT102=40.0)
    for level in (70.0, 80.0, 90.0, 91.0, 92.0):  # the trip at t=4 (PT101 read at 3.5), its history complete at 6
        site.scan(PT101=level)
    [trip] = site.of("trip")
    assert trip.data["values"]["PT101"]["read_at"] == WALL + 3.5 + 0.007
    assert trip.data["values"]["TT102"]["read_at"] == WALL + 0.5 + 0.007
    assert [cause["since"] for cause in trip.data["first_out"]] == [WALL + 3.5 + 0.007]
    [history] = site.of("trip_history")
    assert [(t, v) for t, v, _ in history.data["tags"]["PT101"]] == [
        (WALL + read + 0.007, value) for read, value in
        ((0.5, 60.0), (1.5, 70.0), (2.5, 80.0), (3.5, 90.0), (4.5, 91.0), (5.5, 92.0))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_can_be_off_and_a_trip_while_bypassed_is_no_demand_but_carries_its_values(backend):
    site = Site(backend, interlock(history=TripHistory(0.0, 0.0)))
    site.scan(PT101=90.0)
    site.scan(PT101=50.0)
    site.scan(PT101=50.0, XS101=1.0)  # bypassed
    site.scan(PT101=95.0, reads={"PT101": 0.25})
    site.scan(seconds=10.0)
    assert len(site.of("trip")) == 1 and "history" not in site.of("trip")[0].data
    assert site.of("trip_history") == []
    flagged = [e for e in site.of("bypass") if e.data["event"] == "trip_while_bypassed"]
    assert flagged[0].data["values"]["PT101"] == {"value": 95.0, "quality": 0, "read_at": pytest.approx(WALL + 3.75)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_final_element_failed_when_it_does_not_act_in_time_and_cleared_when_it_acts_late(backend):
    site = Site(backend, interlock(final_element=FinalElement("XV103", expression("XV103 < 5"), 3.0)))
    site.scan(XV103=100.0)
    site.scan(PT101=90.0)  # trip at t=2
    site.scan(seconds=2.0)
    assert site.of("final_element") == []
    site.scan()  # t=5: 3 s after the trip, still open
    [failed] = site.of("final_element")
    assert failed.data["event"] == "failed" and failed.priority == Priority.HIGH
    assert failed.data["value"] == 100.0 and failed.data["unknown"] is False
    site.scan(XV103=2.0)
    late = site.of("final_element")[-1]
    assert late.data["event"] == "failed_cleared" and late.data["acted_after"] == pytest.approx(4.0)
    assert late.priority == Priority.INFO


@pytest.mark.parametrize("backend", BACKENDS)
def test_final_element_ok_within_its_time_and_failed_when_its_feedback_is_bad(backend):
    site = Site(backend, interlock(final_element=FinalElement("XV103", expression("XV103 < 5"), 3.0)))
    site.scan(XV103=100.0)
    site.scan(PT101=90.0)
    site.scan(XV103=1.0)
    [ok] = site.of("final_element")
    assert ok.data["event"] == "ok" and ok.data["acted_after"] == pytest.approx(1.0)
    site.scan(PT101=50.0, XV103=100.0)
    site.quality[ROWS["XV103"]] = Quality.COMM_FAILURE
    site.scan(PT101=90.0)  # second trip; feedback unreadable
    site.scan(seconds=3.0)
    failed = site.of("final_element")[-1]
    assert failed.data["event"] == "failed" and failed.data["unknown"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_consequential_alarms_are_suppressed_by_design_for_the_set_time_after_a_trip(backend):
    site = Site(backend, interlock(consequential=ConsequentialSuppression(("TT102.H", "AT201.GAS*"), 5.0)))
    site.scan()
    site.scan(PT101=90.0)  # trip at t=2: TT102.H suppressed until t=7
    site.scan(TT102=60.0, AT201=45.0)  # TT102.H condition and gas level 2
    states = {item["id"]: item["state"] for item in site.engine.alarms()}
    assert states["TT102.H"] == "DSUPR"
    assert states["AT201.GAS2"] == "UNACK", "gas alarms are never suppressed by a trip"
    site.scan(seconds=3.0)  # t=6
    assert {item["id"]: item["state"] for item in site.engine.alarms()}["TT102.H"] == "DSUPR"
    site.scan()  # t=7
    assert {item["id"]: item["state"] for item in site.engine.alarms()}["TT102.H"] == "UNACK"
    assert site.of("trip")[0].data["consequential"]["until"] == pytest.approx(WALL + 7.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_consequential_suppression_survives_a_restart_and_a_known_trip_is_no_new_demand(backend):
    site = Site(backend, interlock(consequential=ConsequentialSuppression(("TT102.H",), 20.0)))
    site.scan(PT101=90.0)
    saved = site.engine.state_dict()
    again = Site(backend, interlock(consequential=ConsequentialSuppression(("TT102.H",), 20.0)))
    again.engine.restore(saved, now_monotonic=100.0, now_wall=WALL + 5.0)
    again.now = 100.0
    again.scan(PT101=90.0, TT102=60.0)
    assert again.of("trip") == []
    assert {item["id"]: item["state"] for item in again.engine.alarms()}["TT102.H"] == "DSUPR"
    again.scan(seconds=16.0)  # 22 s after the trip
    assert {item["id"]: item["state"] for item in again.engine.alarms()}["TT102.H"] == "UNACK"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trip_condition_found_true_at_start_is_reported_as_such(backend):
    site = Site(backend, interlock())
    site.quality[ROWS["PT101"]] = Quality.NO_VALUE
    site.quality[ROWS["TT102"]] = Quality.NO_VALUE
    site.scan()
    site.quality[:] = 0
    site.scan(PT101=90.0)
    assert site.of("trip")[0].data["found_at_start"] is True


INTERLOCK = ("rules:\n  units: {U100: {max_bypassed: 1}}\n  gas:\n    - {tag: AT201, type: combustible, level1: 20, "
             "level2: 40}\n  interlocks:\n    - id: SIS-101\n      unit: U100\n      bypass: XS101_BYP\n"
             "      max_bypass: 8h\n")


def parse(extra: str):
    from test_rules_config import parse_rules

    return parse_rules(INTERLOCK + extra)


@pytest.mark.parametrize("extra, line, message", [
    ("      causes: ['PT101 > 3']\n", 10, "rules.interlocks[0].causes: causes needs the interlock's trip condition"),
    ("      trip: PT101 > 3\n      final_element: {tag: XV103, expect: 'PT101 < 5', within: 10s}\n", 11,
     "rules.interlocks[0].final_element.expect: expect must read the final element's tag XV103"),
    ("      trip: PT101 > 3\n      final_element: {tag: XV13, expect: 'XV103 < 5', within: 10s}\n", 11,
     "rules.interlocks[0].final_element.tag: 'XV13' is not a tag; did you mean 'XV103'?"),
    ("      trip: PT101 > 3\n      final_element: {tag: XV103, expect: 'XV103 < 5'}\n", 11,
     "rules.interlocks[0].final_element.within: required key is missing"),
    ("      trip: PT101 > 3\n      consequential: {alarms: ['AT201.*'], for: 10m}\n", 11,
     "rules.interlocks[0].consequential.alarms: 'AT201.*' matches gas alarms (AT201.BADPV, AT201.GAS1, "
     "AT201.GAS2): gas alarms are never suppressed"),
    ("      trip: PT101 > 3\n      consequential: {alarms: [NOPE], for: 10m}\n", 11,
     "rules.interlocks[0].consequential.alarms: 'NOPE' matches no alarm"),
    ("      trip: PT101 > 3\n      consequential: {alarms: [AT201.GAS1], for: 2d}\n", 11,
     "rules.interlocks[0].consequential.for: 172800 s is longer than the 86400 s allowed"),
    ("      trip: PT101 > 3\n      history: {before: 20m}\n", 11,
     "rules.interlocks[0].history.before: 1200 s is longer than the 600 s allowed"),
    ("      trip: PT101 > 3\n      causes: ['PT101 >> 3']\n", 11, "rules.interlocks[0].causes[0]: bad expression"),
    ("      trip: PT101 > 3\n      causes: []\n", 11, "rules.interlocks[0].causes: expected a non-empty list"),
    ("      trip: PT101 > 3\n  trip_history: {interval: 0.01s}\n", 11,
     "rules.trip_history.interval: 0.01 s is shorter than the 0.1 s allowed"),
    ("      trip: PT101 > 3\n      history: {befor: 1m}\n", 11, "rules.interlocks[0].history.befor: unknown key"),
])
def test_trip_capture_keys_are_checked_at_check_config(extra, line, message):
    rules, issues = parse(extra)
    assert rules is None
    assert any(issue.startswith(f"rules.yaml:{line}: {message}") for issue in issues), issues


def test_trip_capture_keys_parse_to_the_model():
    rules, issues = parse("      trip: PT101 > 3 or TT102 > 100\n      history: {before: 2m}\n"
                          "      final_element: {tag: XV103, expect: 'XV103 < 5', within: 10s}\n"
                          "      consequential: {alarms: [P101*], for: 10m}\n  trip_history: off\n  alarms:\n"
                          "    - {id: P101_STOP, discrete: {tag: P101_RUN, state: 0}}\n")
    assert issues == []
    il = rules.interlocks[0]
    assert il.history == TripHistory(120.0, 30.0) and rules.trip_history == TripHistory(0.0, 0.0)
    assert (il.final_element.tag, il.final_element.expect.source, il.final_element.within) == ("XV103", "XV103 < 5",
                                                                                               10.0)
    assert il.consequential == ConsequentialSuppression(("P101*",), 600.0) and il.causes == ()
    rules, issues = parse("      trip: PT101 > 3\n      history: off\n")
    assert issues == [] and rules.interlocks[0].history == TripHistory(0.0, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_single_configured_cause_that_is_not_true_at_the_trip_is_no_first_out(backend):
    site = Site(backend, interlock(trip=expression("PT101 >= 85 or TT102 > 70"), causes=(expression("PT101 >= 85"),)))
    site.scan(PT101=50.0, TT102=40.0)
    site.scan(TT102=80.0)
    assert site.of("trip")[0].data["first_out"] == []
    site.scan(TT102=40.0)
    site.scan(PT101=90.0, reads={"PT101": 0.3})
    assert [(c["cause"], c["since"]) for c in site.of("trip")[1].data["first_out"]] == [
        ("PT101 >= 85", pytest.approx(WALL + 4.0 - 0.3))]
