"""The compile step on its own: config in, the arrays each kernel takes out, no kernel run."""

from __future__ import annotations

import numpy as np
import pytest

from rules import conditions as C
from rules.compile import compile_rules
from rules.model import Suppression, TagInfo
from tests.test_rules_fixtures import INFO, ROWS, expression, plant_rules


def compiled():
    rules, tag_alarms = plant_rules()
    return compile_rules(rules, ROWS, tag_alarms, INFO)


def test_alarm_index_runs_tag_limits_then_gas_then_each_rule_kind_in_order():
    plan = compiled()
    ids = [info.id for info in plan.infos]
    assert ids == ["PT101.HH", "PT101.H", "PT101.L", "PT101.LL", "TT102.H", "AT201.GAS2", "AT201.GAS1",
                   "AT202.GAS2", "AT202.GAS1", "TT102_ROC", "FT101_DEV", "PT101_DEV", "P101_TRIP", "PT101_BAD",
                   "TT102_NG", "AT201.BADPV", "AT202.BADPV", "FT101.BADPV", "P101_RUN.BADPV", "XV103.BADPV", "RUNAWAY",
                   "MIXED",
                   "U100_DOWN.STATE_BAD"]
    # bad-PV alarms follow the quality rules; PT101 and TT102 have quality rules of their own; XV103 is read
    # only by the expression alarm MIXED
    assert plan.bounds == {"limit": (0, 9), "rate": (9, 10), "deviation": (10, 12), "discrete": (12, 13),
                           "quality": (13, 20), "expression": (20, 22), "suppression_state": (22, 23)}
    assert plan.index["AT202.GAS1"] == 8


def test_limit_arrays_carry_row_setpoint_deadband_and_direction_of_every_limit_and_gas_level():
    limits = compiled().limits
    assert limits.rows.tolist() == [ROWS["PT101"]] * 4 + [ROWS["TT102"]] + [ROWS["AT201"]] * 2 + [ROWS["AT202"]] * 2
    assert limits.setpoint.tolist() == [90.0, 80.0, 20.0, 10.0, 50.0, 40.0, 20.0, 20.0, 10.0]
    assert limits.deadband.tolist() == [2.0, 2.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert limits.high.tolist() == [True, True, False, False, True, True, True, True, True]


def test_condition_arrays_encode_directions_modes_and_references():
    conditions = compiled().conditions
    rows, per, window, direction, limit, deadband = conditions.rate
    assert (rows.tolist(), per.tolist(), window.tolist(), direction.tolist()) == ([ROWS["TT102"]], [60.0], [8.0],
                                                                                  [C.BOTH])
    rows, reference, setpoint, direction, limit, deadband = conditions.deviation
    assert reference.tolist() == [ROWS["TT102"], -1] and setpoint.tolist() == [0.0, 50.0]
    assert direction.tolist() == [C.RISE, C.BOTH] and deadband.tolist() == [3.0, 2.0]
    assert conditions.quality[1].tolist() == [C.QUALITY_BAD, C.QUALITY_NOT_GOOD] + [C.QUALITY_BAD] * 5
    assert [e.source for e in conditions.expressions] == ["PT101 > 60 and TT102 > 40 and not XV103",
                                                          "abs(PT101 - TT102) / max(FT101, 1) > 2 or PT101 < 5"]


def test_suppression_shares_one_slot_per_condition_and_combines_an_alarms_own_with_a_groups():
    plan = compiled()
    slot = plan.suppression.alarm_slot
    assert plan.suppression.sources == ("not U100_RUNNING",)
    assert slot[plan.index["PT101.L"]] == slot[plan.index["PT101.LL"]] == slot[plan.index["P101_TRIP"]] == 0
    assert slot[plan.index["PT101.HH"]] == -1
    rules, tag_alarms = plant_rules()
    rules = type(rules)(**{**rules.__dict__, "suppressions": (
        Suppression("U100_DOWN", expression("not U100_RUNNING"), ("PT101.L*",)),
        Suppression("HOT", expression("TT102 > 90"), ("P101_TRIP",)))})
    plan = compile_rules(rules, ROWS, tag_alarms, INFO)
    # the group HOT's own condition gets a slot too, for its STATE_BAD alarm
    assert plan.suppression.sources == ("not U100_RUNNING", "(not U100_RUNNING) or (TT102 > 90)", "TT102 > 90")
    assert plan.suppression.alarm_slot[plan.index["P101_TRIP"]] == 1
    assert plan.suppression.group_slot == (0, 2)


def test_program_packs_alarm_expressions_then_suppression_then_interlock_trips():
    plan = compiled()
    assert [e.source for e in plan.program.expressions] == [
        "PT101 > 60 and TT102 > 40 and not XV103", "abs(PT101 - TT102) / max(FT101, 1) > 2 or PT101 < 5",
        "not U100_RUNNING", "PT101 >= 85", "TT102 > 70"]
    assert plan.first_suppression_slot == 2
    interlocks = plan.interlocks
    assert interlocks.trip_slot.tolist() == [3, 4]
    assert interlocks.status_rows.tolist() == [ROWS["XS101"], ROWS["XS102"]]
    assert interlocks.status_invert.tolist() == [0, 1]
    assert interlocks.unit_names == ("U100",) and interlocks.unit_max.tolist() == [1]


def test_behaviour_arrays_follow_the_alarm_index():
    plan = compiled()
    behaviour = plan.behaviour
    assert behaviour.on_delay[plan.index["PT101.H"]] == 2.0 and behaviour.off_delay[plan.index["PT101.H"]] == 1.0
    assert behaviour.latching[plan.index["RUNAWAY"]] == 1 and behaviour.realarm[plan.index["MIXED"]] == 4.0
    assert isinstance(behaviour.on_delay, np.ndarray) and len(behaviour.on_delay) == len(plan.infos)


def test_duplicate_ids_and_unmatched_suppression_are_refused():
    rules, tag_alarms = plant_rules()
    with pytest.raises(ValueError, match="duplicate alarm ids: PT101.H"):
        compile_rules(rules, ROWS, tag_alarms + tag_alarms[:1], INFO)
    rules = type(rules)(**{**rules.__dict__, "suppressions": (
        Suppression("NONE", expression("not U100_RUNNING"), ("NOPE*",)),)})
    with pytest.raises(ValueError, match="no alarm id matches NOPE"):
        compile_rules(rules, ROWS, tag_alarms, INFO)


def test_each_alarm_belongs_to_the_production_unit_its_tags_share():
    rules, tag_alarms = plant_rules()
    info = {name: TagInfo(name, production_unit="U100" if name in ("PT101", "TT102", "P101_RUN") else "")
            for name in ROWS}
    info["AT201"] = TagInfo("AT201", production_unit="U200")
    units = compile_rules(rules, ROWS, tag_alarms, info).alarm_units
    assert units["PT101.HH"] == units["TT102_ROC"] == units["P101_TRIP"] == "U100"
    assert units["AT201.GAS1"] == units["AT201.GAS2"] == "U200"
    assert "AT202.GAS1" not in units, "a tag of no unit"
    assert "RUNAWAY" not in units, "PT101 and TT102 are U100, XV103 of none: no one unit"
    assert "MIXED" not in units
