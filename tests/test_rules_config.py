"""The rules configuration: the documented example stays valid; every error names line, key and token."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.schema import Reader
from core.yamlload import load_yaml
from rules.config import parse_rules_section, parse_tag_alarms
from rules.config_fields import declared_priorities, priority_names
from rules.engine import RuleEngine
from rules.expr import ExpressionError, parse_expression

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"


@dataclass(frozen=True)
class Tag:
    name: str
    unit: str = ""
    range_low: float | None = None
    range_high: float | None = None
    alarms: Any = None
    line: int = 0


TAGS = {tag.name: tag for tag in (
    Tag("PT101", "MPa", 0, 4), Tag("TT102", "C", 0, 200), Tag("FT101", "t/h", 0, 100), Tag("FIC101_SP", "t/h"),
    Tag("P101_RUN"), Tag("U100_RUNNING"), Tag("XV103"), Tag("AT201", "%LEL", 0, 100), Tag("AT202", "ppm", 0, 50),
    Tag("XS101_BYP"), Tag("FIC-101.PV"))}


def doc_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)


def parse_rules(source: str, tags=None):
    reader = Reader("rules.yaml")
    node = load_yaml(source)
    rules = parse_rules_section(node["rules"], "rules", node.key_lines["rules"], reader, tags or TAGS)
    return rules, [str(issue) for issue in reader.issues]


def test_documented_example_is_valid_and_builds():
    tag_block, rules_block = doc_blocks()
    reader = Reader("doc.yaml")
    tag_node = load_yaml(tag_block)[0]
    alarms = parse_tag_alarms(tag_node["alarms"], "tags[0].alarms", tag_node.key_lines["alarms"], reader,
                              TAGS["PT101"], priority_names(load_yaml(rules_block)["rules"]))
    assert reader.issues == []
    assert [(limit.level, limit.setpoint, round(limit.deadband, 6)) for limit in alarms.limits] == \
        [("HH", 3.6, 0.08), ("H", 3.2, 0.08), ("L", 0.5, 0.08)]
    hh = alarms.limit("HH")
    assert (hh.behaviour.priority, hh.behaviour.on_delay, hh.behaviour.off_delay, hh.behaviour.realarm) == \
        ("high", 2.0, 5.0, 1800.0)
    assert (alarms.hh, alarms.h, alarms.l, alarms.ll) == (3.6, 3.2, 0.5, None)  # today's attributes
    tags = {**TAGS, "PT101": Tag("PT101", "MPa", 0, 4, alarms, 5)}
    rules, issues = parse_rules(rules_block, tags)
    assert issues == []
    assert [rule.kind for rule in rules.alarms] == ["rate", "deviation", "discrete", "quality", "expression"]
    assert rules.alarms[1].behaviour.on_delay == 30.0 and rules.shelving_max == 8 * 3600
    engine = RuleEngine.build(rules, {name: row for row, name in enumerate(tags)}, len(tags), [alarms], tags)
    # + TT102, FT101, AT201, AT202 .BADPV (PT101 has its own, P101_RUN off), XV103.BADPV (read by the
    # expression alarm) + U100_SHUTDOWN.STATE_BAD
    assert engine.alarm_count == 3 + 5 + 4 + 5 + 1


def test_todays_tag_alarm_keys_still_work():
    reader = Reader("t.yaml")
    node = load_yaml("alarms: {hh: 9.5, h: 9, l: 1, ll: 0.5, deadband: 0.1, priority: high}")
    alarms = parse_tag_alarms(node["alarms"], "alarms", 1, reader, Tag("LT101", "m", 0, 10))
    assert reader.issues == []
    assert (alarms.hh, alarms.h, alarms.l, alarms.ll, alarms.deadband, alarms.priority) == (9.5, 9, 1, 0.5, 0.1, "high")


@pytest.mark.parametrize("source, line, message", [
    ("alarms:\n  h: 90\n  hh: 80\n", 3, "alarms.hh: limits must rise ll < l < h < hh, but HH 80.0 is not above H 90.0"),
    ("alarms:\n  h: 250\n", 2, "alarms.h: H 250.0 lies outside the range 0..200"),
    ("alarms:\n  deadband: 1\n", 1, "alarms: no limit given"),
    ("alarms:\n  h: {value: 90, priority: urgent}\n", 2, "alarms.h.priority: 'urgent' is not a priority"),
    ("alarms:\n  h: 90\n  on_delay: soon\n", 3, "alarms.on_delay: 'soon' is not a duration"),
    ("alarms:\n  h: 90\n  latchng: true\n", 3, "alarms.latchng: unknown key 'latchng'; did you mean 'latching'?"),
])
def test_tag_alarm_errors(source, line, message):
    reader = Reader("t.yaml")
    node = load_yaml(source)
    assert parse_tag_alarms(node["alarms"], "alarms", 1, reader, Tag("TT102", "C", 0, 200)) is None
    rendered = [str(issue) for issue in reader.issues]
    assert any(text.startswith(f"t.yaml:{line}: {message}") for text in rendered), rendered


def test_percent_deadband_needs_a_range():
    reader = Reader("t.yaml")
    node = load_yaml("alarms:\n  h: 90\n  deadband: 2%\n")
    assert parse_tag_alarms(node["alarms"], "alarms", 1, reader, Tag("X")) is None
    assert "needs the tag's range" in str(reader.issues[0])


RULE = """rules:
  alarms:
    - id: A1
      when: "{expr}"
"""


@pytest.mark.parametrize("expr, token", [
    ("PT101.value > 3", "attribute access 'PT101.value'"),
    ("PT101[0] > 3", "subscript 'PT101[0]'"),
    ("sqrt(PT101) > 3", "call of 'sqrt'"),
    ("__import__('os') > 3", "call of '__import__'"),
    ("PT10 > 3", "'PT10' at column 1 is not a tag; did you mean 'PT101'?"),
    ("PT101 ** 2 > 3", "operator '**' is not allowed at column 7"),
    ("PT101 % 2 > 3", "operator '%'"),
    ("PT101 in 3", "operator 'in'"),
    ("PT101 > 'high'", "constant \"'high'\""),
    ("(lambda: 1)() > 0", "call of 'lambda: 1' is not allowed"),
    ("PT101 > > 3", "syntax error at column 9"),
    ("(PT101 > 3) + 1 > 0", "'PT101 > 3' is a condition where a number is needed at column 2"),
    ("abs(PT101, TT102) > 0", "abs() takes one argument"),
])
def test_expression_whitelist_rejections_name_the_token_and_line(expr, token):
    rules, issues = parse_rules(RULE.format(expr=expr.replace('"', '\\"')))
    assert rules is None
    assert len(issues) == 1 and issues[0].startswith("rules.yaml:4: rules.alarms[0].when: bad expression"), issues
    assert token in issues[0], issues[0]


def test_expression_quoting_and_evaluation_shape():
    expression = parse_expression("`FIC-101.PV` > 3 and 0 < PT101 <= 4 or not XV103", TAGS)
    assert expression.tags == ("FIC-101.PV", "PT101", "XV103")
    with pytest.raises(ExpressionError, match="unbalanced backtick"):
        parse_expression("`FIC-101.PV > 3", TAGS)


GAS = """rules:
  gas:
    - tag: {tag}
      type: {type}
      level1: {l1}
      level2: {l2}
{extra}"""


@pytest.mark.parametrize("tag, type_, l1, l2, extra, line, message", [
    ("AT201", "combustible", 30, 40, "", 5, "rules.gas[0].level1: combustible level 1 at 30 %LEL is above the "
                                             "GB/T 50493-2019 limit of 25 %LEL"),
    ("AT201", "combustible", 20, 60, "", 6, "rules.gas[0].level2: combustible level 2 at 60 %LEL is above the "
                                             "GB/T 50493-2019 limit of 50 %LEL"),
    ("AT202", "toxic", 15, 20, "      oel: 10\n", 5, "rules.gas[0].level1: toxic level 1 at 15 ppm is above the "
                                                     "GB/T 50493-2019 limit of 100 % OEL = 10 ppm"),
    ("AT202", "toxic", 10, 25, "      oel: 10\n", 6, "rules.gas[0].level2: toxic level 2 at 25 ppm is above the "
                                                     "GB/T 50493-2019 limit of 200 % OEL = 20 ppm"),
    ("AT202", "toxic", 6, 10, "      oel: 100\n      idlh: 100\n      range_limited: true\n", 5,
     "rules.gas[0].level1: toxic level 1 at 6 ppm is above the GB/T 50493-2019 limit for a range-limited "
     "detector of 5 % IDLH = 5 ppm"),
    ("AT202", "toxic", 5, 10, "      oel: 10\n      idlh: 100\n      range_limited: true\n", 9,
     "rules.gas[0].range_limited: tag AT202 ranges up to 50 ppm, which reaches 200 % OEL"),
    ("AT202", "toxic", 5, 10, "", 3, "rules.gas[0].oel: a toxic channel needs its OEL"),
    ("TT102", "combustible", 5, 10, "", 4, "rules.gas[0].type: a combustible channel reads %LEL, but tag TT102"),
    ("AT201", "combustible", 20, 10, "", 6, "rules.gas[0].level2: level 2 (10) must be above level 1 (20)"),
])
def test_gas_setpoints_beyond_gbt_50493_are_rejected_citing_the_limit(tag, type_, l1, l2, extra, line, message):
    rules, issues = parse_rules(GAS.format(tag=tag, type=type_, l1=l1, l2=l2, extra=extra))
    assert rules is None
    assert any(issue.startswith(f"rules.yaml:{line}: {message}") for issue in issues), issues


def test_gas_within_limits_and_range_limited_fallback_accepted():
    rules, issues = parse_rules(GAS.format(tag="AT202", type="toxic", l1=5, l2=10,
                                           extra="      oel: 100\n      idlh: 100\n      range_limited: true\n"))
    assert issues == [] and rules.gas[0].range_limited


@pytest.mark.parametrize("source, line, message", [
    ("rules:\n  alarms:\n    - id: A\n      rate: {tag: TT102, limit: 1}\n      when: 'TT102 > 1'\n", 3,
     "rules.alarms[0]: an alarm has exactly one of rate, deviation, discrete, quality, when; found rate, when"),
    ("rules:\n  alarms:\n    - id: A\n      deviation: {tag: FT101, limit: 1}\n", 4,
     "rules.alarms[0].deviation: give exactly one of reference"),
    ("rules:\n  alarms:\n    - id: A\n      discrete: {tag: P101_RN, state: 0}\n", 4,
     "rules.alarms[0].discrete.tag: 'P101_RN' is not a tag; did you mean 'P101_RUN'?"),
    ("rules:\n  alarms:\n    - id: A\n      when: PT101 > 1\n      for: 3s\n      on_delay: 2s\n", 5,
     "rules.alarms[0].for: give either for or on_delay"),
    ("rules:\n  alarms:\n    - id: A\n      when: PT101 > 1\n    - id: A\n      when: PT101 > 2\n", 5,
     "rules.alarms[1].id: alarm id 'A' is already used"),
    ("rules:\n  interlocks:\n    - id: I1\n      unit: U9\n      bypass: XS101_BYP\n      max_bypass: 4h\n", 4,
     "rules.interlocks[0].unit: unit 'U9' is not declared under rules.units"),
    ("rules:\n  units: {U1: {max_bypassed: 1}}\n  interlocks:\n    - id: I1\n      unit: U1\n      max_bypass: 4h\n", 4,
     "rules.interlocks[0]: an interlock needs its status tag(s)"),
    ("rules:\n  suppression:\n    - id: S\n      when: not U100_RUNNING\n      alarms: [NOPE*]\n", 5,
     "rules.suppression[0].alarms: 'NOPE*' matches no alarm"),
    ("rules:\n  priorities: {high: high, low: low}\n", 2, "rules.priorities: declare at least a high, a medium"),
    ("rules:\n  shelving: {max_duration: 0s}\n", 2, "rules.shelving.max_duration: must be longer than zero"),
    ("rules:\n  alarms:\n    - id: A\n      when: PT101 > 1\n      priority:\n", 5,
     "rules.alarms[0].priority: None is not a priority"),
])
def test_rules_section_errors(source, line, message):
    rules, issues = parse_rules(source)
    assert rules is None
    assert any(issue.startswith(f"rules.yaml:{line}: {message}") for issue in issues), issues


P1_P4 = "  priorities: {P1: critical, P2: high, P3: medium, P4: low}\n"


def test_priorities_without_medium_give_every_default_a_declared_priority_and_the_engine_runs():
    """Today: check-config said OK and the daemon died with KeyError: 'medium' at start."""
    source = ("rules:\n" + P1_P4 + "  alarms:\n    - id: HOT\n      when: TT102 > 80\n"
              "  gas:\n    - {tag: AT201, type: combustible, level1: 20, level2: 40}\n"
              "  units: {U1: {max_bypassed: 1}}\n"
              "  interlocks:\n    - {id: SIS-1, unit: U1, bypass: XS101_BYP, max_bypass: 4h}\n")
    node = load_yaml(source)
    reader = Reader("t.yaml")
    tag_node = load_yaml("alarms: {h: 3.2}")
    alarms = parse_tag_alarms(tag_node["alarms"], "alarms", 1, reader, TAGS["PT101"],
                              declared_priorities(node["rules"]))
    rules, issues = parse_rules(source)
    assert issues == [] and reader.issues == []
    assert alarms.limit("H").behaviour.priority == "P3"
    assert rules.alarms[0].behaviour.priority == "P3"
    gas = rules.gas[0]
    assert (gas.behaviour2.priority, gas.behaviour1.priority) == ("P1", "P2")  # highest and second highest
    assert rules.bypass_priorities["trip_while_bypassed"] == "P1" and rules.bypass_priorities["ended"] == "P4"
    rows = {name: row for row, name in enumerate(TAGS)}
    engine = RuleEngine.build(rules, rows, len(rows), [alarms], TAGS, backend="reference")
    values, quality = np.zeros(len(rows)), np.zeros(len(rows), np.uint8)
    values[rows["PT101"]], values[rows["AT201"]], values[rows["XS101_BYP"]] = 3.5, 45.0, 1.0
    events = engine.evaluate(values, quality, 1.0, 1000.0)
    assert {event.data.get("alarm") or event.data.get("event"): event.data.get("priority") for event in events
            if event.kind in ("alarm", "gas_alarm")} == {"AT201.GAS2": "P1", "AT201.GAS1": "P2", "PT101.H": "P3"}
    assert any(event.kind == "bypass" and event.data["event"] == "started" for event in events)


def test_a_limit_without_a_priority_to_default_to_is_refused_not_crashed_on():
    reader = Reader("t.yaml")
    node = load_yaml("alarms:\n  h: 3.2\n")
    assert parse_tag_alarms(node["alarms"], "alarms", 1, reader, TAGS["PT101"], ("urgent", "routine")) is None
    assert str(reader.issues[0]).startswith("t.yaml:2: alarms.h.priority: no priority given and none of level medium")


def test_gas_levels_follow_the_declared_ranking_whatever_the_names():
    rules, issues = parse_rules("rules:\n  priorities: {urgent: critical, emergency: critical, alert: high, "
                                "routine: medium, note: low}\n  gas:\n"
                                "    - {tag: AT201, type: combustible, level1: 20, level2: 40}\n")
    assert issues == []
    assert (rules.gas[0].behaviour2.priority, rules.gas[0].behaviour1.priority) == ("urgent", "alert")


def test_oel_in_mg_per_m3_is_converted_to_ppm_and_its_kind_recorded():
    rules, issues = parse_rules(GAS.format(tag="AT202", type="toxic", l1=7, l2=14, extra=(
        "      gas: H2S\n      oel: 10\n      oel_unit: mg/m³\n      oel_kind: MAC\n      molar_mass: 34.08\n")))
    assert issues == []
    channel = rules.gas[0]
    assert channel.oel == pytest.approx(10 * 24.45 / 34.08) and round(channel.oel, 2) == 7.17
    assert (channel.oel_kind, channel.oel_as_given, channel.molar_mass) == ("MAC", (10.0, "mg/m3"), 34.08)
    _, refused = parse_rules(GAS.format(tag="AT202", type="toxic", l1=7.2, l2=14, extra=(
        "      oel: 10\n      oel_unit: mg/m3\n      oel_kind: MAC\n      molar_mass: 34.08\n")))
    assert refused and "100 % OEL = 7.1743 ppm" in refused[0]


def parse_with_warnings(source: str):
    reader = Reader("rules.yaml")
    node = load_yaml(source)
    rules = parse_rules_section(node["rules"], "rules", node.key_lines["rules"], reader, TAGS)
    return rules, [str(issue) for issue in reader.issues], [str(issue) for issue in reader.warnings]


@pytest.mark.parametrize("extra, refused, warned", [
    ("      on_delay: 10s\n", None, None),
    ("      on_delay: 11s\n", None, "rules.yaml:7: rules.gas[0].on_delay: an on-delay of 11 s is long for a gas alarm"),
    ("      on_delay: 30s\n", None, "on_delay: an on-delay of 30 s is long"),
    ("      on_delay: 31s\n", "rules.yaml:7: rules.gas[0].on_delay: an on-delay of 31 s holds a gas alarm back", None),
    ("      deadband: 10\n", None, None),
    ("      deadband: 10.5\n", None, "rules.yaml:7: rules.gas[0].deadband: a deadband of 10.5 is more than 50%"),
    ("      deadband: 19.99\n", None, "deadband: a deadband of 19.99 is more than 50%"),
    ("      deadband: 20\n", "rules.yaml:7: rules.gas[0].deadband: a deadband of 20 is not below level 1", None),
    ("      level1_priority: high\n      level2_priority: high\n", None, None),
    ("      level1_priority: critical\n      level2_priority: high\n",
     "rules.yaml:8: rules.gas[0].level2_priority: level 2 priority high is below the level 1 priority critical", None),
])
def test_gas_bounds_refuse_the_unsafe_and_warn_on_the_unusual(extra, refused, warned):
    rules, issues, warnings = parse_with_warnings(GAS.format(tag="AT201", type="combustible", l1=20, l2=40,
                                                             extra=extra))
    if refused:
        assert rules is None and any(issue.startswith(refused) for issue in issues), issues
    else:
        assert issues == [] and rules is not None
    if warned:
        assert any(warning.startswith(warned) or warned in warning for warning in warnings), warnings
    else:
        assert warnings == []


def test_gas_full_scale_and_units():
    tags = {**TAGS, "AT203": Tag("AT203", "", 0, 100), "AT204": Tag("AT204", "", 0, 50)}
    _, issues = parse_rules(GAS.format(tag="AT202", type="toxic", l1=10, l2=20, extra="      oel: 10\n"),
                            {**TAGS, "AT202": Tag("AT202", "ppm", 0, 15)})
    assert any(issue.startswith("rules.yaml:6: rules.gas[0].level2: level 2 at 20 is above the full scale of tag "
                                "AT202 (15 ppm") for issue in issues), issues
    _, issues = parse_rules(GAS.format(tag="AT203", type="combustible", l1=20, l2=40, extra=""), tags)
    assert any("rules.gas[0].tag: tag AT203 has no unit" in issue for issue in issues), issues
    reader = Reader("rules.yaml")
    node = load_yaml(GAS.format(tag="AT204", type="toxic", l1=10, l2=20, extra="      oel: 10\n"))
    rules = parse_rules_section(node["rules"], "rules", 1, reader, tags)
    assert reader.issues == [] and rules is not None  # a toxic tag without a unit: a warning
    assert [warning.path for warning in reader.warnings] == ["rules.gas[0].tag", "rules.gas[0].oel_kind"]


@pytest.mark.parametrize("window, refused", [("1h", False), ("3601s", True), ("2h", True)])
def test_flood_window_above_an_hour_is_refused_not_cut(window, refused):
    rules, issues = parse_rules(f"rules:\n  analytics:\n    flood_window: {window}\n")
    if refused:
        assert rules is None and issues[0].startswith("rules.yaml:3: rules.analytics.flood_window: ")
    else:
        assert issues == [] and rules.analytics.flood_window == 3600.0
