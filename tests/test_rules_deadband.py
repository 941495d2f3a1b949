"""The deadband of every limit kind, pinned by examples on both backends: a high limit is active from
value >= limit and clears only at value < limit - deadband, a low limit mirrors it. Each table walks up
to the limit, back into the deadband (still active), onto its edge (still active) and just past it
(clear). Written from docs/rules.md, not from the kernels, so removing a deadband from a kernel and its
twin together fails here."""

from __future__ import annotations

import pytest
from test_rules_fixtures import behaviour
from test_rules_scenarios import Plant

from rules.model import AlarmRule, DeviationSpec, GasChannel, LimitAlarm, RateSpec, RulesConfig, TagAlarmConfig

BACKENDS = ("numba", "reference")


def deadband_plant(backend):
    no_delay = behaviour()
    tag_alarms = (TagAlarmConfig("PT101", (LimitAlarm("HH", 90.0, 2.0, no_delay), LimitAlarm("H", 80.0, 2.0, no_delay),
                                           LimitAlarm("L", 20.0, 1.0, no_delay),
                                           LimitAlarm("LL", 10.0, 1.0, no_delay))),)
    rules = RulesConfig(
        gas=(GasChannel("AT201", "combustible", "methane", 20.0, 40.0, deadband=1.0),
             GasChannel("AT202", "toxic", "H2S", 5.0, 10.0, oel=10.0, deadband=0.5)),
        alarms=(AlarmRule("DEV_BOTH", DeviationSpec("FT101", 10.0, setpoint=50.0, deadband=2.0), no_delay),
                AlarmRule("DEV_LOW", DeviationSpec("FT101", 5.0, reference_tag="TT102", direction="low",
                                                   deadband=1.0), no_delay),
                AlarmRule("ROC", RateSpec("XV103", 30.0, 60.0, 8.0, "rise", 6.0), no_delay)))
    plant = Plant(backend, rules=rules, tag_alarms=tag_alarms)
    plant.scan(PT101=50.0, FT101=50.0, TT102=50.0, AT201=0.0, AT202=0.0, XV103=0.0)
    return plant


def active(plant, alarm):
    return next(item["active"] for item in plant.engine.alarms(include_normal=True) if item["id"] == alarm)


T, F = True, False
TABLES = {
    "PT101.H": ("PT101", [(79.9, F), (80.0, T), (79.0, T), (78.01, T), (78.0, T), (77.99, F), (79.99, F), (80.0, T)]),
    "PT101.HH": ("PT101", [(89.9, F), (90.0, T), (88.5, T), (88.0, T), (87.99, F), (89.99, F)]),
    "PT101.L": ("PT101", [(20.1, F), (20.0, T), (20.5, T), (21.0, T), (21.01, F), (20.01, F), (20.0, T)]),
    "PT101.LL": ("PT101", [(10.1, F), (10.0, T), (10.9, T), (11.0, T), (11.01, F), (10.01, F)]),
    "AT201.GAS1": ("AT201", [(19.9, F), (20.0, T), (19.5, T), (19.0, T), (18.99, F), (19.99, F)]),
    "AT201.GAS2": ("AT201", [(39.9, F), (40.0, T), (39.5, T), (39.0, T), (38.99, F), (39.99, F)]),
    "AT202.GAS1": ("AT202", [(4.9, F), (5.0, T), (4.5, T), (4.49, F)]),
    "AT202.GAS2": ("AT202", [(9.9, F), (10.0, T), (9.5, T), (9.49, F)]),
    # |FT101 - 50| against 10, deadband 2: both sides
    "DEV_BOTH": ("FT101", [(59.9, F), (60.0, T), (58.5, T), (58.0, T), (57.99, F), (40.0, T), (42.0, T), (42.01, F)]),
    # FT101 below TT102 (50) by 5 or more, deadband 1
    "DEV_LOW": ("FT101", [(45.1, F), (45.0, T), (46.0, T), (46.01, F), (55.0, F)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alarm", sorted(TABLES))
def test_deadband_of_every_limit_kind(backend, alarm):
    plant = deadband_plant(backend)
    tag, steps = TABLES[alarm]
    seen = []
    for value, _expected in steps:
        plant.scan(**{tag: value})
        seen.append((value, active(plant, alarm)))
    assert seen == steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_deadband_of_a_rate_of_change_alarm(backend):
    """Rise faster than 30 per minute (0.5 per second) over 8 s; clears only below 24 per minute."""
    plant = deadband_plant(backend)
    level = 0.0

    def ramp(per_second, seconds):
        nonlocal level
        for _ in range(seconds):
            level += per_second
            plant.scan(XV103=level)
        return active(plant, "ROC")

    assert ramp(0.0, 10) is False
    assert ramp(0.49, 10) is False  # 29.4 per minute
    assert ramp(0.5, 10) is True  # 30
    assert ramp(0.45, 10) is True  # 27: inside the deadband
    assert ramp(0.41, 10) is True  # 24.6
    assert ramp(0.39, 10) is False  # 23.4: below 30 - 6
    assert ramp(0.45, 10) is False  # 27 again: not back until 30
