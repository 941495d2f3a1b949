"""Kernels against the plain-Python reference: random values, qualities, times and operator actions
must give identical events and identical states."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules_fixtures import ROWS, TAGS, build, plant_rules, point_table

import rules.engine
from rules import conditions as C
from rules.expr import parse_expression
from rules.isa import ActionError
from rules.model import DeviationSpec
from rules.program import make_stack, pack, run_programs_reference



def boundaries() -> list[float]:
    """Values at and around every limit of the fixture plant and its deadband: the limit, the deadband's
    far edge, and a hair either side of both (where a kernel and its twin could part ways)."""
    rules, tag_alarms = plant_rules()
    edges = [(limit.setpoint, limit.deadband, limit.high) for alarm in tag_alarms for limit in alarm.limits]
    edges += [(level, gas.deadband, True) for gas in rules.gas for level in (gas.level1, gas.level2)]
    for rule in rules.alarms:
        spec = rule.spec
        if isinstance(spec, DeviationSpec):  # against the setpoint, or a reference tag at 50 (or 40)
            for reference in ([spec.setpoint] if spec.setpoint is not None else [50.0, 40.0]):
                edges += [(reference + spec.limit, spec.deadband, True), (reference - spec.limit, spec.deadband, False)]
    hair = 1e-9
    values = set()
    for setpoint, deadband, high in edges:
        far = setpoint - deadband if high else setpoint + deadband
        values.update((setpoint, setpoint - hair, setpoint + hair, far, far - hair, far + hair))
    return sorted(values)


analog = st.one_of(st.sampled_from(boundaries()), st.sampled_from(boundaries()),
                   st.sampled_from([0.0, 1.0, 5.0, 50.0, 60.0, 95.0]),
                   st.floats(-10, 120, allow_nan=False), st.just(float("nan")))
binary = st.sampled_from([0.0, 1.0, 0.0, 1.0, 2.0, float("nan")])
quality = st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 16, 17, 20])
DISCRETE = ("XV103", "XS101", "XS102", "P101_RUN", "U100_RUNNING")
change = st.one_of(st.tuples(st.sampled_from([t for t in TAGS if t not in DISCRETE]), analog, quality),
                   st.tuples(st.sampled_from(DISCRETE), binary, quality))
ALARMS = ["PT101.HH", "PT101.H", "PT101.L", "PT101.LL", "TT102.H", "TT102_ROC", "FT101_DEV", "PT101_DEV", "P101_TRIP",
          "PT101_BAD", "TT102_NG", "RUNAWAY", "MIXED", "AT201.GAS1", "AT201.GAS2", "AT202.GAS1", "AT202.GAS2"]
action = st.tuples(st.sampled_from(["ack", "ack", "ack", "shelve", "unshelve", "out_of_service", "return_to_service",
                                    "reset"]),
                   st.sampled_from(ALARMS), st.sampled_from([0.5, 3.0, 8.0, 30.0]), st.booleans())
bypass = st.sampled_from([None, None, None, "authorize", "revoke"])
# steps that add up to every on/off delay of the fixture (1, 1.5, 2, 3 s) exactly, and past it
step = st.tuples(st.lists(change, max_size=4), st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 3.0, 7.0]),
                 st.lists(action, max_size=3), bypass)


def comparable(events):
    return [(e.kind, e.ts, e.source, e.message, int(e.priority), json.dumps(e.data, sort_keys=True, allow_nan=False))
            for e in events]


def states(engine):
    a = engine.arrays
    return [x.tolist() for x in (a.active, a.pending, a.paused, a.state, a.latch, a.since, a.active_since, a.stale,
                                 a.shelved_until, a.oneshot, a.oos, a.hidden, a.supp, engine.cond, engine.raw,
                                 engine.expr_out,
                                 engine.bypassed, engine.trip, engine.flags, engine.unit_flag, engine.in_service,
                                 engine.in_service_quality, *engine._rate_buffers)]


def same_nan(x, y):
    return json.dumps(x) == json.dumps(y)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(step, min_size=1, max_size=60), st.data())
def test_engine_kernels_match_reference(compiled, steps, data):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules.engine, "kernels", lambda: compiled)
        run_both_engines(steps, data)


def run_both_engines(steps, data):
    engines = [build("numba"), build("reference")]
    values, qualities = point_table()
    now, wall = 0.0, 1_700_000_000.0
    for changes, dt, actions, bypass_action in steps:
        for tag, v, q in changes:
            values[ROWS[tag]], qualities[ROWS[tag]] = v, q
        now += dt
        wall += dt
        results = [comparable(engine.evaluate(values, qualities, now, wall)) for engine in engines]
        assert results[0] == results[1]
        for name, alarm, seconds, one_shot in actions:
            standing = [item["id"] for item in engines[0].alarms()]
            if standing and data.draw(st.booleans()):
                alarm = data.draw(st.sampled_from(standing))  # mostly act on alarms that are not NORM
            outcomes = []
            for engine in engines:
                try:
                    outcomes.append(comparable(engine.act(name, alarm, "op", "test", duration=seconds,
                                                          one_shot=one_shot, now_monotonic=now, now_wall=wall)))
                except ActionError as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == outcomes[1]
        if bypass_action == "authorize":
            for engine in engines:
                engine.bypass_authorize("SIS-101", reason="r", permit="P", approved_by="lead", requested_by="op",
                                        duration=4.0, measures="watch", now_wall=wall)
        elif bypass_action == "revoke":
            for engine in engines:
                records = engine.bypass_list(now_wall=wall)
                if records:
                    engine.bypass_revoke(records[-1]["id"], user="lead", reason="done", now_wall=wall)
        assert same_nan(states(engines[0]), states(engines[1]))
    assert engines[0].alarms(include_normal=True) == engines[1].alarms(include_normal=True)
    assert json.dumps(engines[0].state_dict()) == json.dumps(engines[1].state_dict())


names = st.sampled_from(["PT101", "TT102", "XV103", "FT101"])
leaf = st.one_of(names, st.sampled_from(["0", "1", "2.5", "80", "-3"]))


def arithmetic(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"abs({c})"), children.map(lambda c: f"-{c}"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"))


numeric = st.recursive(leaf, arithmetic, max_leaves=6)
comparison = st.tuples(numeric, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numeric).map(" ".join)
chained = st.tuples(numeric, st.sampled_from(["<", "<="]), numeric, st.sampled_from(["<", "<="]), numeric).map(" ".join)


def logic(children):
    return st.one_of(st.tuples(children, st.sampled_from(["and", "or"]), children).map(lambda t: f"({' '.join(t)})"),
                     children.map(lambda c: f"not {c}"))


def vote(children):
    return st.tuples(st.integers(1, 3), st.lists(children, min_size=3, max_size=3)).map(
        lambda t: f"vote({t[0]}, {', '.join(t[1])})")


condition = st.recursive(st.one_of(comparison, chained, names), lambda c: st.one_of(logic(c), vote(c)),
                         max_leaves=5)
top_level = st.one_of(condition, numeric)  # a number in the boolean place: true when not zero, NaN unknown
row_value = st.one_of(st.sampled_from([0.0, 0.0, 1.0, -1.0, 80.0, 2.5, -0.0, float("inf")]),
                      st.floats(-100, 100, allow_nan=False), st.just(float("nan")))


@settings(max_examples=300, deadline=None)
@given(st.lists(top_level, min_size=1, max_size=6), st.lists(st.tuples(row_value, quality), min_size=len(TAGS),
                                                             max_size=len(TAGS)),
       st.lists(st.sampled_from(["tripped", "healthy"]), min_size=6, max_size=6))
def test_expression_interpreter_matches_tree_evaluation(compiled, sources, table, modes):
    program = pack([parse_expression(source, TAGS) for source in sources], ROWS, modes[:len(sources)])
    values = np.array([v for v, _ in table])
    qualities = np.array([q for _, q in table], np.uint8)
    kernel = np.zeros(program.count, np.uint8)
    reference = np.zeros(program.count, np.uint8)
    compiled.run_programs(values, qualities, program.op, program.arg, program.constants, program.start,
                 make_stack(program), kernel)
    run_programs_reference(values, qualities, program, reference)
    assert kernel.tolist() == reference.tolist(), sources


# ---------------------------------------------------------------- the condition kernels at their boundaries

def near(setpoint: float, deadband: float, high: bool):
    """Values at a limit and at its deadband's far edge, a hair either side of each, and anywhere."""
    far = setpoint - deadband if high else setpoint + deadband
    hair = max(abs(setpoint), 1.0) * 1e-12
    exact = [setpoint, setpoint - hair, setpoint + hair, far, far - hair, far + hair, (setpoint + far) / 2]
    return st.one_of(st.sampled_from(exact), st.sampled_from(exact),
                     st.floats(setpoint - 3 * deadband - 1, setpoint + 3 * deadband + 1), st.just(float("nan")))


limit_case = st.tuples(st.floats(-100, 100), st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.25]), st.booleans()).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.tuples(near(*c), quality), min_size=2, max_size=40)))


@settings(max_examples=200, deadline=None)
@given(st.lists(limit_case, min_size=1, max_size=8))
def test_limit_kernel_matches_reference_around_every_limit_and_deadband(compiled, cases):
    n = len(cases)
    rows = np.arange(n, dtype=np.int64)
    setpoint = np.array([case[0][0] for case in cases])
    deadband = np.array([case[0][1] for case in cases])
    high = np.array([case[0][2] for case in cases])
    conds = [np.zeros(n, np.uint8), np.zeros(n, np.uint8)]
    raws = [np.zeros(n, np.uint8), np.zeros(n, np.uint8)]
    for step in range(max(len(case[1]) for case in cases)):
        values = np.array([case[1][min(step, len(case[1]) - 1)][0] for case in cases])
        qualities = np.array([case[1][min(step, len(case[1]) - 1)][1] for case in cases], np.uint8)
        compiled.limit_conditions(values, qualities, rows, setpoint, deadband, high, conds[0], raws[0])
        C.limit_conditions_reference(values, qualities, rows, setpoint, deadband, high, conds[1], raws[1])
        assert raws[0].tolist() == raws[1].tolist() and conds[0].tolist() == conds[1].tolist(), (step, cases)


deviation_case = st.tuples(st.floats(-50, 50), st.sampled_from([0.5, 5.0, 10.0]), st.sampled_from([0.0, 1.0, 2.5]),
                           st.sampled_from([C.BOTH, C.RISE, C.FALL])).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.tuples(st.one_of(near(c[0] + c[1], c[2], True),
                                                                 near(c[0] - c[1], c[2], False)), quality),
                                             min_size=2, max_size=40)))


@settings(max_examples=200, deadline=None)
@given(st.lists(deviation_case, min_size=1, max_size=8))
def test_deviation_kernel_matches_reference_around_both_limits_and_deadbands(compiled, cases):
    n = len(cases)
    rows = np.arange(n, dtype=np.int64)
    reference_rows = np.full(n, -1, np.int64)
    setpoint, limit, deadband, mode = (np.array([case[0][k] for case in cases]) for k in range(4))
    mode = mode.astype(np.int64)
    conds = [np.zeros(n, np.uint8), np.zeros(n, np.uint8)]
    raws = [np.zeros(n, np.uint8), np.zeros(n, np.uint8)]
    for step in range(max(len(case[1]) for case in cases)):
        values = np.array([case[1][min(step, len(case[1]) - 1)][0] for case in cases])
        qualities = np.array([case[1][min(step, len(case[1]) - 1)][1] for case in cases], np.uint8)
        compiled.deviation_conditions(values, qualities, rows, reference_rows, setpoint, mode, limit, deadband,
                                      conds[0], raws[0])
        C.deviation_conditions_reference(values, qualities, rows, reference_rows, setpoint, mode, limit, deadband,
                                         conds[1], raws[1])
        assert raws[0].tolist() == raws[1].tolist() and conds[0].tolist() == conds[1].tolist(), (step, cases)


rate_case = st.tuples(st.sampled_from([0.5, 1.0, 3.0]), st.sampled_from([0.0, 0.1, 0.25]),
                      st.sampled_from([C.BOTH, C.RISE, C.FALL])).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.tuples(
        st.one_of(st.sampled_from([c[0], -c[0], c[0] - c[1], c[0] - c[1] - 0.01, c[0] - c[1] + 0.01, 0.0, c[0] + 0.01,
                                   -(c[0] - c[1]), -(c[0] - c[1] + 0.01)]),
                  st.floats(-2 * c[0], 2 * c[0])), quality, st.sampled_from([0.5, 1.0, 1.0, 2.0])),
        min_size=4, max_size=60)))


@settings(max_examples=150, deadline=None)
@given(st.lists(rate_case, min_size=1, max_size=6))
def test_rate_kernel_matches_reference_around_its_limit_and_deadband(compiled, cases):
    """Each case ramps its tag at slopes (units per second) near the limit and its deadband's far edge."""
    n = len(cases)
    rows = np.arange(n, dtype=np.int64)
    scale, window = np.ones(n), np.full(n, 4.0)
    limit = np.array([case[0][0] for case in cases])
    deadband = np.array([case[0][1] for case in cases])
    mode = np.array([case[0][2] for case in cases], np.int64)
    state = [(np.zeros((n, C.RATE_SLOTS)), np.zeros((n, C.RATE_SLOTS)), np.zeros(n, np.int64), np.zeros(n, np.int64),
              np.zeros(n, np.uint8), np.zeros(n, np.uint8)) for _ in range(2)]
    level, now = np.zeros(n), 0.0
    for step in range(max(len(case[1]) for case in cases)):
        moves = [case[1][min(step, len(case[1]) - 1)] for case in cases]
        dt = moves[0][2]
        now += dt
        level = level + np.array([slope * dt for slope, _, _ in moves])
        qualities = np.array([q for _, q, _ in moves], np.uint8)
        compiled.rate_conditions(level, qualities, now, rows, scale, window, mode, limit, deadband, *state[0])
        C.rate_conditions_reference(level, qualities, now, rows, scale, window, mode, limit, deadband, *state[1])
        assert [x.tolist() for x in state[0]] == [x.tolist() for x in state[1]], (step, cases)
