"""Three-valued (Kleene) logic of expressions and votes, table-driven on both the numba interpreter and
the tree-walking reference: one failed transmitter must not blind a condition its partner decides."""

from __future__ import annotations

import numpy as np
import pytest
from test_rules_fixtures import ROWS, TAGS, expression

from rules.expr import UNKNOWN, ExpressionError
from rules.program import make_stack, pack, run_programs_reference

U = UNKNOWN
BAD = None  # a tag with bad quality

CASES = [
    # redundancy: A (PT101) decides while B (FT101) is bad
    ("PT101 >= 3.6 or FT101 >= 3.6", {"PT101": 3.9, "FT101": BAD}, 1),
    ("PT101 >= 3.6 or FT101 >= 3.6", {"PT101": 3.0, "FT101": BAD}, U),
    ("PT101 >= 3.6 and FT101 >= 3.6", {"PT101": 3.0, "FT101": BAD}, 0),
    ("PT101 >= 3.6 and FT101 >= 3.6", {"PT101": 3.9, "FT101": BAD}, U),
    ("not FT101 >= 3.6", {"FT101": BAD}, U),
    ("not (PT101 >= 3.6 or FT101 >= 3.6)", {"PT101": 3.9, "FT101": BAD}, 0),
    # max / min of known operands decide where the bound does
    ("max(PT101, FT101) >= 3.6", {"PT101": 3.9, "FT101": BAD}, 1),
    ("max(PT101, FT101) >= 3.6", {"PT101": 3.0, "FT101": BAD}, U),
    ("max(PT101, FT101) < 3.6", {"PT101": 3.9, "FT101": BAD}, 0),
    ("max(PT101, FT101) <= 3.6", {"PT101": 3.6, "FT101": BAD}, U),
    ("min(PT101, FT101) <= 0.5", {"PT101": 0.2, "FT101": BAD}, 1),
    ("min(PT101, FT101) > 0.5", {"PT101": 0.2, "FT101": BAD}, 0),
    ("min(PT101, FT101) > 0.5", {"PT101": 0.9, "FT101": BAD}, U),
    ("max(PT101, FT101, TT102) > 80", {"PT101": BAD, "FT101": 85.0, "TT102": BAD}, 1),
    # arithmetic on an unknown number stays unknown; the bounds still decide what they can
    ("PT101 + FT101 > 3", {"PT101": 5.0, "FT101": BAD}, U),
    ("abs(FT101) >= 0", {"FT101": BAD}, 1),
    ("abs(FT101) < 0", {"FT101": BAD}, 0),
    ("-FT101 > 2", {"FT101": BAD}, U),
    ("PT101 == FT101", {"PT101": 1.0, "FT101": BAD}, U),
    ("PT101 != FT101", {"PT101": 1.0, "FT101": BAD}, U),
    ("PT101 == 1", {"PT101": 1.0}, 1),
    ("PT101 != 1", {"PT101": 1.0}, 0),
    ("0 < FT101 < 5 or PT101 > 1", {"PT101": 2.0, "FT101": BAD}, 1),
    # a NaN number is unknown: 0/0 at the top level and inside a comparison
    ("PT101 / FT101", {"PT101": 0.0, "FT101": 0.0}, U),
    ("PT101 / FT101", {"PT101": 2.0, "FT101": 0.0}, 1),  # inf: non-zero
    ("PT101 - FT101", {"PT101": 2.0, "FT101": 2.0}, 0),
    ("PT101 - FT101", {"PT101": 2.0, "FT101": 1.0}, 1),
    ("PT101 / FT101 > 1", {"PT101": 0.0, "FT101": 0.0}, U),
    ("PT101 / FT101 > 1 or TT102 > 1", {"PT101": 0.0, "FT101": 0.0, "TT102": 5.0}, 1),
    ("PT101 * FT101 > 1", {"PT101": 0.0, "FT101": BAD}, U),
    ("PT101", {"PT101": float("nan")}, U),  # a good quality without a number is unknown too
    ("XV103", {"XV103": BAD}, U),
    ("XV103 or PT101 > 1", {"XV103": BAD, "PT101": 2.0}, 1),
    # votes: 2oo3, 1oo2; an unknown condition counts as tripped (default)
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 4.0, "FT101": 4.0, "TT102": 1.0}, 1),
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 4.0, "FT101": 1.0, "TT102": 1.0}, 0),
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 4.0, "FT101": BAD, "TT102": 1.0}, 1),
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 1.0, "FT101": BAD, "TT102": 1.0}, 0),
    ("vote(1, PT101 > 3, FT101 > 3)", {"PT101": 1.0, "FT101": BAD}, 1),
    ("vote(2, PT101 > 3, FT101 > 3)", {"PT101": 4.0, "FT101": 4.0}, 1),
    ("vote(2, PT101 > 3, FT101 > 3)", {"PT101": 4.0, "FT101": 1.0}, 0),
    ("vote(1, XV103, XS101, XS102)", {"XV103": 0.0, "XS101": 0.0, "XS102": 2.0}, 1),
    ("not vote(2, PT101 > 3, FT101 > 3, TT102 > 3) and PT101 < 9", {"PT101": 1.0, "FT101": 1.0, "TT102": 1.0}, 1),
]

HEALTHY_CASES = [  # the same votes with unknown conditions counted as healthy
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 4.0, "FT101": BAD, "TT102": 1.0}, 0),
    ("vote(2, PT101 > 3, FT101 > 3, TT102 > 3)", {"PT101": 4.0, "FT101": BAD, "TT102": 5.0}, 1),
    ("vote(1, PT101 > 3, FT101 > 3)", {"PT101": 1.0, "FT101": BAD}, 0),
]


def evaluate(compiled, source, inputs, mode="tripped"):
    """The result of `source` from the kernel and from the reference, over a table holding `inputs`."""
    values = np.full(len(TAGS), 7.0)
    quality = np.zeros(len(TAGS), np.uint8)
    for tag, value in inputs.items():
        if value is BAD:
            values[ROWS[tag]], quality[ROWS[tag]] = 3.0, 20  # a plausible stale number, bad quality
        else:
            values[ROWS[tag]] = value
    program = pack([expression(source)], ROWS, [mode])
    kernel, reference = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
    compiled.run_programs(values, quality, program.op, program.arg, program.constants, program.start,
                          make_stack(program), kernel)
    run_programs_reference(values, quality, program, reference)
    return int(kernel[0]), int(reference[0])


@pytest.mark.parametrize(("source", "inputs", "expected"), CASES)
def test_kleene_logic(compiled, source, inputs, expected):
    assert evaluate(compiled, source, inputs) == (expected, expected)


@pytest.mark.parametrize(("source", "inputs", "expected"), HEALTHY_CASES)
def test_votes_counting_unknown_as_healthy(compiled, source, inputs, expected):
    assert evaluate(compiled, source, inputs, "healthy") == (expected, expected)


@pytest.mark.parametrize(("source", "message"), [
    ("vote(PT101 > 1, FT101 > 1, TT102 > 1)", "needs k"),
    ("vote(3, PT101 > 1, FT101 > 1)", "from 1 to 2"),
    ("vote(0, PT101 > 1, FT101 > 1)", "from 1 to 2"),
    ("vote(1.5, PT101 > 1, FT101 > 1)", "whole number"),
    ("vote(1, PT101 > 1)", "takes 3 to 17 arguments"),
    ("vote(2, PT101 > 1, FT101 > 1) + 1 > 0", "is a condition where a number is needed"),
])
def test_vote_is_checked_when_parsed(source, message):
    with pytest.raises(ExpressionError, match=message):
        expression(source)


def test_pack_refuses_an_unknown_vote_mode():
    with pytest.raises(ValueError, match="tripped"):
        pack([expression("vote(1, PT101 > 1, FT101 > 1)")], ROWS, ["maybe"])


def test_minus_zero_and_zero_are_different_constants(compiled):
    """1 / -0 is -inf and 1 / 0 is +inf: packing must not merge the two constants (it once did)."""
    values, quality = np.zeros(len(TAGS)), np.zeros(len(TAGS), np.uint8)
    values[ROWS["PT101"]] = 1.0
    program = pack([expression("PT101 / -0 < 0"), expression("PT101 / 0 > 0"),
                    expression("PT101 / -0 < 0 and PT101 / 0 > 0")], ROWS)
    kernel, reference = np.zeros(3, np.uint8), np.zeros(3, np.uint8)
    compiled.run_programs(values, quality, program.op, program.arg, program.constants, program.start,
                          make_stack(program), kernel)
    run_programs_reference(values, quality, program, reference)
    assert kernel.tolist() == reference.tolist() == [1, 1, 1]
