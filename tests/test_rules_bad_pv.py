"""Bad input is never silent: every alarmed tag has its `TAG.BADPV` alarm (ISA-18.2 states of its own), a
gas detector's fault, inhibit or calibration is an alarm of its channel, and every alarm listing and event
shows the quality next to the value. Both backends."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_rules_config import TAGS as CONFIG_TAGS
from test_rules_fixtures import ROWS, build, plant_rules, point_table

from core.schema import Reader
from core.yamlload import load_yaml
from core.types import Priority, Quality
from rules.config import parse_rules_section
from rules.model import BadPvConfig, BadPvTag

WALL = 1_700_000_000.0
BACKENDS = ["numba", "reference"]


class Plant:
    def __init__(self, backend, **bad_pv):
        rules, tag_alarms = plant_rules()
        if bad_pv:
            rules = replace(rules, bad_pv=BadPvConfig(**bad_pv))
        self.engine = build(backend, rules, tag_alarms)
        self.values, self.quality = point_table()
        self.now = 0.0

    def scan(self, seconds=1.0, quality=None, **values):
        for name, value in values.items():
            self.values[ROWS[name]] = value
        for name, code in (quality or {}).items():
            self.quality[ROWS[name]] = code
        self.now += seconds
        return self.engine.evaluate(self.values, self.quality, self.now, WALL + self.now)

    def listed(self, alarm):
        return next(item for item in self.engine.alarms(include_normal=True) if item["id"] == alarm)


def alarm_events(events, alarm):
    return [e for e in events if e.kind in ("alarm", "gas_alarm") and e.data["alarm"] == alarm]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transmitter_failure_raises_its_bad_pv_alarm_and_the_held_alarm_shows_why(backend):
    plant = Plant(backend)
    plant.scan(FT101=40.0, TT102=10.0)  # FT101_DEV active: 30 above TT102
    events = plant.scan(quality={"FT101": Quality.COMM_FAILURE})
    (bad,) = alarm_events(events, "FT101.BADPV")
    assert (bad.data["state"], bad.data["kind"], bad.data["quality"], bad.priority) == \
        ("UNACK", "bad_pv", int(Quality.COMM_FAILURE), Priority.MEDIUM)
    assert "FT101 quality COMM_FAILURE" in bad.message
    assert alarm_events(events, "FT101_DEV") == []  # held, neither raised nor cleared on untrusted data
    held = plant.listed("FT101_DEV")
    assert held["state"] == "UNACK" and held["quality"] == int(Quality.COMM_FAILURE)
    assert plant.listed("FT101.BADPV")["state"] == "UNACK"
    # ISA-18.2: acknowledged, then the value returns: it clears after its off-delay (10 s by default)
    plant.engine.act("ack", "FT101.BADPV", "alice", now_monotonic=plant.now, now_wall=WALL + plant.now)
    plant.scan(quality={"FT101": Quality.GOOD})
    assert plant.listed("FT101.BADPV")["state"] == "ACKED"
    events = []
    for _ in range(10):
        events += plant.scan()
    assert [e.data["state"] for e in alarm_events(events, "FT101.BADPV")] == ["NORM"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tag_not_read_yet_is_no_bad_pv(backend):
    plant = Plant(backend)
    events = plant.scan(quality={"FT101": Quality.NO_VALUE})
    assert alarm_events(events, "FT101.BADPV") == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quality, why", [(Quality.SENSOR_FAULT, "SENSOR_FAULT"),
                                          (Quality.MAINTENANCE, "MAINTENANCE")])
def test_gas_detector_fault_or_inhibit_is_an_alarm_of_its_channel(backend, quality, why):
    """drivers/gds gives a channel in fault SENSOR_FAULT and one in inhibit or calibration MAINTENANCE."""
    plant = Plant(backend)
    plant.scan(AT201=5.0)
    events = plant.scan(quality={"AT201": quality})
    (bad,) = alarm_events(events, "AT201.BADPV")
    assert bad.priority == Priority.HIGH  # the channel's level 1 priority: its area is unwatched
    assert bad.data["quality"] == int(quality) and f"AT201 quality {why}" in bad.message
    listing = plant.listed("AT201.BADPV")
    assert (listing["state"], listing["quality"], listing["tag"]) == ("UNACK", int(quality), "AT201")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_pv_priority_and_delay_are_settable_and_off_per_tag(backend):
    plant = Plant(backend, priority="low", on_delay=3.0,
                  tags={"FT101": BadPvTag(priority="high", on_delay=1.0),
                        "P101_RUN": BadPvTag(enabled=False, reason="spare pump, not in service")})
    assert "P101_RUN.BADPV" not in plant.engine.index
    events = plant.scan(quality={"FT101": Quality.DEVICE_ERROR, "AT202": Quality.DEVICE_ERROR})
    assert alarm_events(events, "FT101.BADPV") == [] and alarm_events(events, "AT202.BADPV") == []
    events = plant.scan()  # FT101: 1 s on-delay
    assert [e.priority for e in alarm_events(events, "FT101.BADPV")] == [Priority.HIGH]
    events = plant.scan() + plant.scan()  # AT202: the section's 3 s; a gas tag keeps its level 1 priority
    assert [e.data["state"] for e in alarm_events(events, "AT202.BADPV")] == ["UNACK"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_input_read_only_by_an_expression_alarm_has_its_bad_pv_alarm(backend):
    plant = Plant(backend)
    plant.scan()
    (bad,) = alarm_events(plant.scan(quality={"XV103": Quality.COMM_FAILURE}), "XV103.BADPV")
    assert (bad.data["state"], bad.data["quality"]) == ("UNACK", int(Quality.COMM_FAILURE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_alarm_event_and_listing_carries_the_quality(backend):
    plant = Plant(backend)
    events = plant.scan(PT101=95.0)
    hh = alarm_events(events, "PT101.HH")[0]
    assert hh.data["quality"] == 0 and "[" not in hh.message
    plant.quality[ROWS["PT101"]] = Quality.UNCERTAIN
    events = plant.engine.act("ack", "PT101.HH", "alice", now_monotonic=plant.now, now_wall=WALL + plant.now)
    acked = alarm_events(events, "PT101.HH")[0]  # value and quality as the point table has them now
    assert acked.data["quality"] == int(Quality.UNCERTAIN) and "PT101 95 [UNCERTAIN]" in acked.message
    plant.scan(quality={"PT101": Quality.SENSOR_FAULT})
    assert plant.listed("PT101.HH")["quality"] == int(Quality.SENSOR_FAULT)


def test_before_the_first_scan_a_listing_says_no_value_not_good():
    plant = Plant("reference")
    assert plant.listed("PT101.HH")["quality"] == int(Quality.NO_VALUE)


def test_gatewayd_alarms_shows_the_quality_next_to_the_value():
    from gatewayd.operator.render import render_alarms

    plant = Plant("reference")
    plant.scan(FT101=40.0, TT102=10.0)
    plant.scan(quality={"FT101": Quality.COMM_FAILURE})
    table = render_alarms(plant.engine.alarms())
    row = next(line for line in table.splitlines() if line.startswith("FT101_DEV "))
    assert "40 [COMM_FAILURE]" in row


def parse(source):
    reader = Reader("rules.yaml")
    node = load_yaml(source)
    rules = parse_rules_section(node["rules"], "rules", node.key_lines["rules"], reader, CONFIG_TAGS)
    return rules, [str(issue) for issue in reader.issues]


RULES = """rules:
  alarms:
    - id: FT_DEV
      deviation: {tag: FT101, setpoint: 50, limit: 5}
  bad_pv:
"""


def test_bad_pv_section_parses_and_turning_one_off_needs_a_reason():
    rules, issues = parse(RULES + "    priority: high\n    on_delay: 5s\n    off_delay: 0s\n    trigger: bad_or_stale\n"
                                  "    tags:\n      FT101: {enabled: false, reason: 'meter removed, WO-7'}\n")
    assert issues == []
    assert (rules.bad_pv.priority, rules.bad_pv.on_delay, rules.bad_pv.off_delay, rules.bad_pv.trigger) == \
        ("high", 5.0, 0.0, "bad_or_stale")
    assert rules.bad_pv.tags["FT101"] == BadPvTag(False, "meter removed, WO-7")
    _, issues = parse(RULES + "    tags:\n      FT101: {enabled: false}\n")
    assert issues == ["rules.yaml:7: rules.bad_pv.tags.FT101.reason: turning off the bad-PV alarm of FT101 needs "
                      "a reason (it is recorded with the config)"]
    _, issues = parse(RULES + "    tags:\n      TT102: {priority: high}\n")
    assert issues[0].startswith("rules.yaml:7: rules.bad_pv.tags.TT102: tag 'TT102' has no alarm")
    _, issues = parse(RULES + "    priority: urgent\n")
    assert issues[0].startswith("rules.yaml:6: rules.bad_pv.priority: 'urgent' is not a priority")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gas_channel_bad_pv_priority_is_settable_apart(backend):
    plant = Plant(backend, priority="low", gas_priority="critical")
    events = plant.scan(quality={"AT201": Quality.SENSOR_FAULT, "FT101": Quality.SENSOR_FAULT})
    assert [e.priority for e in alarm_events(events, "AT201.BADPV")] == [Priority.CRITICAL]
    assert [e.priority for e in alarm_events(events, "FT101.BADPV")] == [Priority.LOW]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gas_channels_bad_pv_is_never_suppressed_by_process_state(backend):
    from test_rules_fixtures import expression

    from rules.model import Suppression

    rules, tag_alarms = plant_rules()
    rules = replace(rules, suppressions=(Suppression("ALL", expression("not U100_RUNNING"), ("*",)),))
    plant = Plant(backend)
    plant.engine = build(backend, rules, tag_alarms)
    plant.scan(U100_RUNNING=0.0)  # the unit is down: "*" suppresses every process alarm
    plant.scan(quality={"AT201": Quality.SENSOR_FAULT, "FT101": Quality.COMM_FAILURE})
    assert plant.listed("AT201.BADPV")["state"] == "UNACK"  # gas detection: never
    assert plant.listed("FT101.BADPV")["state"] == "DSUPR"  # a process transmitter: by design


def test_bad_pv_ids_are_known_to_suppression_patterns_at_check_config():
    base = RULES.replace("  bad_pv:\n", "  gas:\n    - {tag: AT201, type: combustible, level1: 20, level2: 40}\n")
    rules, issues = parse(base + "  suppression:\n    - {id: S, when: not U100_RUNNING, alarms: [FT101.BADPV]}\n")
    assert issues == [] and rules.suppressions[0].alarms == ("FT101.BADPV",)
    _, issues = parse(base + "  suppression:\n    - {id: S, when: not U100_RUNNING, alarms: [AT201.BADPV]}\n")
    assert issues == ["rules.yaml:8: rules.suppression[0].alarms: 'AT201.BADPV' matches only gas alarms "
                      "(AT201.BADPV): gas alarms are never suppressed by process state (GB/T 50493)"]
    _, issues = parse(RULES.replace("  bad_pv:\n", "    - id: FT101.BADPV\n      when: FT101 > 1\n"))
    assert any("rules.yaml:5: rules: alarm id 'FT101.BADPV' is the bad-PV alarm of tag FT101" in issue
               for issue in issues), issues


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_config_built_in_code_with_other_priority_names_still_builds(backend):
    """Model defaults (medium, high, critical) under priorities P1..P4: their levels, not a KeyError."""
    rules, tag_alarms = plant_rules()
    rules = replace(rules, priorities={"P1": 4, "P2": 3, "P3": 2, "P4": 1})
    plant = Plant(backend)
    plant.engine = build(backend, rules, tag_alarms)
    events = plant.scan(PT101=95.0, AT201=45.0)
    levels = {e.data["alarm"]: e.priority for e in events if e.kind in ("alarm", "gas_alarm")}
    assert levels["PT101.HH"] == Priority.HIGH and levels["AT201.GAS2"] == Priority.CRITICAL
