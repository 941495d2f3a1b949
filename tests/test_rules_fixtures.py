"""Shared builders for the rules tests: a small plant of tags and a rules config touching every kind."""

from __future__ import annotations

import numpy as np

from rules.engine import RuleEngine
from rules.expr import parse_expression
from rules.model import (
    AlarmBehaviour,
    AlarmRule,
    AnalyticsConfig,
    DeviationSpec,
    DiscreteSpec,
    ExpressionSpec,
    GasChannel,
    Interlock,
    LimitAlarm,
    ProductionUnit,
    QualitySpec,
    RateSpec,
    RulesConfig,
    Suppression,
    TagAlarmConfig,
    TagInfo,
)

TAGS = ("PT101", "TT102", "XV103", "AT201", "AT202", "XS101", "XS102", "P101_RUN", "U100_RUNNING", "FT101")
ROWS = {name: row for row, name in enumerate(TAGS)}
INFO = {name: TagInfo(name) for name in TAGS}


def expression(source: str):
    return parse_expression(source, TAGS)


def behaviour(priority="medium", **kw):
    return AlarmBehaviour(priority=priority, **kw)


def plant_rules() -> tuple[RulesConfig, tuple[TagAlarmConfig, ...]]:
    tag_alarms = (
        TagAlarmConfig("PT101", (
            LimitAlarm("HH", 90.0, 2.0, behaviour("high", latching=True)),
            LimitAlarm("H", 80.0, 2.0, behaviour("medium", on_delay=2.0, off_delay=1.0, realarm=5.0)),
            LimitAlarm("L", 20.0, 1.0, behaviour("low")),
            LimitAlarm("LL", 10.0, 1.0, behaviour("high", on_delay=1.5)),
        )),
        TagAlarmConfig("TT102", (LimitAlarm("H", 50.0, 0.0, behaviour("low")),)),
    )
    rules = RulesConfig(
        alarms=(
            AlarmRule("TT102_ROC", RateSpec("TT102", 30.0, 60.0, 8.0, "both", 2.0), behaviour("low")),
            AlarmRule("FT101_DEV", DeviationSpec("FT101", 15.0, reference_tag="TT102", direction="high", deadband=3.0),
                      behaviour("medium", off_delay=2.0)),
            AlarmRule("PT101_DEV", DeviationSpec("PT101", 30.0, setpoint=50.0, deadband=2.0), behaviour("low")),
            AlarmRule("P101_TRIP", DiscreteSpec("P101_RUN", (0.0,)), behaviour(
                "high", suppressed_when=expression("not U100_RUNNING"))),
            AlarmRule("PT101_BAD", QualitySpec("PT101", "bad"), behaviour("low", on_delay=3.0)),
            AlarmRule("TT102_NG", QualitySpec("TT102", "not_good"), behaviour("low")),
            AlarmRule("RUNAWAY", ExpressionSpec(expression("PT101 > 60 and TT102 > 40 and not XV103")),
                      behaviour("critical", on_delay=2.0, latching=True)),
            AlarmRule("MIXED", ExpressionSpec(expression("abs(PT101 - TT102) / max(FT101, 1) > 2 or PT101 < 5")),
                      behaviour("low", off_delay=1.0, realarm=4.0)),
        ),
        gas=(
            GasChannel("AT201", "combustible", "methane", 20.0, 40.0, deadband=1.0),
            GasChannel("AT202", "toxic", "H2S", 10.0, 20.0, oel=10.0, idlh=100.0),
        ),
        suppressions=(Suppression("U100_DOWN", expression("not U100_RUNNING"), ("PT101.L*", "FT101_DEV")),),
        units=(ProductionUnit("U100", 1),),
        interlocks=(
            Interlock("SIS-101", "U100", 10.0, bypass_tags=("XS101",), protects=("PT101",),
                      trip=expression("PT101 >= 85")),
            Interlock("SIS-102", "U100", 20.0, in_service_tags=("XS102",), trip=expression("TT102 > 70")),
        ),
        analytics=AnalyticsConfig(chatter_count=3, chatter_window=10.0, flood_start=6, flood_end=2,
                                  flood_window=20.0, stale_after=15.0, report_interval=30.0),
        shelving_max=10.0,
    )
    return rules, tag_alarms


def build(backend="numba", rules=None, tag_alarms=None, now=0.0, wall=1_700_000_000.0) -> RuleEngine:
    if rules is None:
        rules, default_alarms = plant_rules()
        tag_alarms = default_alarms if tag_alarms is None else tag_alarms
    return RuleEngine.build(rules, ROWS, len(TAGS), tag_alarms or (), INFO, backend=backend,
                            now_monotonic=now, now_wall=wall)


def point_table(**values) -> tuple[np.ndarray, np.ndarray]:
    value = np.zeros(len(TAGS))
    value[ROWS["U100_RUNNING"]] = 1.0
    value[ROWS["XS102"]] = 1.0
    value[ROWS["P101_RUN"]] = 1.0
    value[ROWS["PT101"]] = 50.0
    for name, v in values.items():
        value[ROWS[name]] = v
    return value, np.zeros(len(TAGS), np.uint8)
