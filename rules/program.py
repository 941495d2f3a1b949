"""Many expressions as one packed bytecode program, run by one numba interpreter kernel.

One kernel compiled once (and cached) serves any number of expressions, so 10,000 expression rules
cost no extra compile time: adding a rule only adds rows to the arrays. `pack()` turns `Expression`s
(tags resolved to point-table rows) into arrays; `run_programs` writes 0 / 1 / UNKNOWN per expression.

The interpreter follows the three-valued logic of `rules.expr`: each stack slot holds bounds
[low, high]. A tag with bad quality (>= 16) or no value (NaN) pushes [-inf, +inf]; a condition is
[0, 0] false, [1, 1] true, [0, 1] unknown. An expression is UNKNOWN when its result is not decided
by the inputs that are usable; `rules.isa` then holds the alarm's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from core.types import QUALITY_BAD_MIN
from rules.expr import (
    ABS,
    ADD,
    CONST,
    DIV,
    EQ,
    GE,
    GT,
    LE,
    LT,
    MAX,
    MIN,
    MUL,
    NE,
    NEG,
    NOT,
    OR,
    SUB,
    TAG,
    UNKNOWN,
    VOTE,
    VOTE_HEALTHY,
    VOTE_TRIPPED,
    Expression,
    constant_key,
    evaluate_reference,
)

BAD = QUALITY_BAD_MIN


@dataclass(frozen=True)
class Program:
    """Packed bytecode of `count` expressions. Expression e runs code[start[e]:start[e+1]]."""

    op: np.ndarray  # int32
    arg: np.ndarray  # int32: constant index, point-table row, or a vote's n | k << 8 | healthy << 16
    constants: np.ndarray  # float64
    start: np.ndarray  # int64, count + 1
    depth: int
    expressions: tuple[Expression, ...]
    rows: tuple[tuple[int, ...], ...]  # per expression, the row of each of its tags
    unknown_votes: tuple[str, ...]  # per expression, how its votes count an unknown condition

    @property
    def count(self) -> int:
        return len(self.expressions)


def pack(expressions: Sequence[Expression], tag_rows: Mapping[str, int],
         unknown_votes: Sequence[str] | None = None) -> Program:
    """`unknown_votes` gives, per expression, how its votes count an unknown condition: "tripped"
    (the default) or "healthy"."""
    modes = tuple(unknown_votes) if unknown_votes is not None else (VOTE_TRIPPED,) * len(expressions)
    if len(modes) != len(expressions) or not set(modes) <= {VOTE_TRIPPED, VOTE_HEALTHY}:
        raise ValueError(f"unknown_votes: one of {VOTE_TRIPPED!r}, {VOTE_HEALTHY!r} per expression")
    ops: list[int] = []
    args: list[int] = []
    constants: list[float] = []
    constant_index: dict[str, int] = {}
    start, all_rows = [0], []
    depth = 1
    for expression, mode in zip(expressions, modes):
        rows = tuple(tag_rows[tag] for tag in expression.tags)
        all_rows.append(rows)
        for opcode, arg in expression.code:
            if opcode == TAG:
                arg = rows[arg]
            elif opcode == CONST:
                value = expression.constants[arg]
                key = constant_key(value)
                if key not in constant_index:
                    constant_index[key] = len(constants)
                    constants.append(value)
                arg = constant_index[key]
            elif opcode == VOTE and mode == VOTE_HEALTHY:
                arg |= 1 << 16
            ops.append(opcode)
            args.append(arg)
        start.append(len(ops))
        depth = max(depth, expression.depth)
    return Program(np.array(ops, dtype=np.int32), np.array(args, dtype=np.int32),
                   np.array(constants or [0.0], dtype=np.float64), np.array(start, dtype=np.int64), depth,
                   tuple(expressions), tuple(all_rows), modes)


@njit(cache=True, nogil=True, inline="always")
def _truth(low, high):
    """0 false (surely zero), 1 true (surely not zero), UNKNOWN otherwise."""
    if low == 0.0 and high == 0.0:
        return 0
    if low > 0.0 or high < 0.0:
        return 1
    return UNKNOWN


@njit(cache=True, nogil=True, inline="always")
def _ordered(low_a, high_a, low_b, high_b, strict):
    """a > b (strict) or a >= b, three-valued over the bounds."""
    if (low_a > high_b) if strict else (low_a >= high_b):
        return 1
    if (high_a <= low_b) if strict else (high_a < low_b):
        return 0
    return UNKNOWN


@njit(cache=True, nogil=True, inline="always")
def _span(a, b, c, d):
    """Smallest and largest of four corner results, zeros made positive; NaN among them: anything."""
    a, b, c, d = a + 0.0, b + 0.0, c + 0.0, d + 0.0
    if a != a or b != b or c != c or d != d:
        return -np.inf, np.inf
    return min(min(a, b), min(c, d)), max(max(a, b), max(c, d))


@njit(cache=True, nogil=True, inline="always")
def _condition(code, al, ah, bl, bh):
    """A comparison (GT, GE, LT, LE, EQ, NE) or a connective (AND, OR) of two bounded operands, three-valued."""
    if code == GT:
        return _ordered(al, ah, bl, bh, True)
    if code == GE:
        return _ordered(al, ah, bl, bh, False)
    if code == LT:
        return _ordered(bl, bh, al, ah, True)
    if code == LE:
        return _ordered(bl, bh, al, ah, False)
    if code == EQ or code == NE:
        if al == ah and bl == bh and al == bl:
            t = 1
        elif ah < bl or bh < al:
            t = 0
        else:
            t = UNKNOWN
        if code == NE and t != UNKNOWN:
            t = 1 - t
        return t
    ta = _truth(al, ah)  # AND, OR
    tb = _truth(bl, bh)
    decisive = 1 if code == OR else 0
    if ta == decisive or tb == decisive:
        return decisive
    if ta == UNKNOWN or tb == UNKNOWN:
        return UNKNOWN
    return 1 - decisive


@njit(cache=True, nogil=True, inline="always")
def _arithmetic(code, al, ah, bl, bh):
    """The bounds of ADD, SUB, MUL, DIV, MIN or MAX over two bounded operands; NaN among them: anything."""
    if code == ADD:
        rl, rh = al + bl, ah + bh
    elif code == SUB:
        rl, rh = al - bh, ah - bl
    elif code == MIN:  # on a tie the left operand, as Python's min()
        rl = bl if bl < al else al
        rh = bh if bh < ah else ah
    elif code == MAX:
        rl = bl if bl > al else al
        rh = bh if bh > ah else ah
    elif al == ah and bl == bh:  # MUL or DIV of two known numbers: exactly IEEE 754
        rl = al * bl if code == MUL else al / bl
        rh = rl
    elif code == MUL:
        rl, rh = _span(al * bl, al * bh, ah * bl, ah * bh)
    elif bl <= 0.0 <= bh:
        rl, rh = -np.inf, np.inf
    else:
        rl, rh = _span(al / bl, al / bh, ah / bl, ah / bh)
    if rl != rl or rh != rh:
        return -np.inf, np.inf
    return rl, rh


@njit(cache=True, nogil=True, inline="always")
def _vote(lo, hi, top, packed):
    """k out of the n conditions on top of the stack tripped (packed: n | k << 8 | unknown-healthy << 16)."""
    n = packed & 255
    needed = (packed >> 8) & 255
    unknown_trips = (packed >> 16) == 0
    tripped = 0
    for s in range(top - n + 1, top + 1):
        r = _truth(lo[s], hi[s])
        if r == 1 or (r == UNKNOWN and unknown_trips):
            tripped += 1
    return 1 if tripped >= needed else 0


@njit(cache=True, nogil=True, error_model="numpy")
def run_programs(values, quality, op, arg, constants, start, stack, out):
    """Evaluate every packed expression into `out` (uint8: 0, 1 or UNKNOWN). `stack` (2 x depth) is
    scratch space: row 0 the low bounds, row 1 the high bounds."""
    lo = stack[0]
    hi = stack[1]
    for e in range(out.shape[0]):
        top = -1
        for pc in range(start[e], start[e + 1]):
            code = op[pc]
            if code == TAG:
                top += 1
                row = arg[pc]
                x = values[row]
                if quality[row] >= BAD or x != x:
                    lo[top] = -np.inf
                    hi[top] = np.inf
                else:
                    lo[top] = x
                    hi[top] = x
                continue
            if code == CONST:
                top += 1
                lo[top] = constants[arg[pc]]
                hi[top] = lo[top]
                continue
            if code == NEG:
                x = lo[top]
                lo[top] = -hi[top]
                hi[top] = -x
                continue
            if code == ABS:
                a, b = lo[top], hi[top]
                if a >= 0.0:
                    lo[top], hi[top] = abs(a), abs(b)
                elif b <= 0.0:
                    lo[top], hi[top] = abs(b), abs(a)
                else:
                    lo[top], hi[top] = 0.0, max(-a, b)
                continue
            if code == NOT:
                t = _truth(lo[top], hi[top])
                t = UNKNOWN if t == UNKNOWN else 1 - t
            elif code == VOTE:
                t = _vote(lo, hi, top, arg[pc])
                top -= (arg[pc] & 255) - 1
            else:
                bl, bh = lo[top], hi[top]
                top -= 1
                al, ah = lo[top], hi[top]
                if code == ADD or code == SUB or code == MUL or code == DIV or code == MIN or code == MAX:
                    lo[top], hi[top] = _arithmetic(code, al, ah, bl, bh)
                    continue
                t = _condition(code, al, ah, bl, bh)
            lo[top] = 1.0 if t == 1 else 0.0  # a condition: [0, 0] false, [1, 1] true, [0, 1] unknown
            hi[top] = 0.0 if t == 0 else 1.0
        out[e] = _truth(lo[0], hi[0])


def run_programs_reference(values, quality, program: Program, out) -> None:
    """Plain-Python twin: evaluates each expression's tree (not its bytecode) over the same rows."""
    for e, expression in enumerate(program.expressions):
        row_of = dict(zip(expression.tags, program.rows[e]))

        def value_of(tag: str, row_of=row_of) -> float | None:
            row = row_of[tag]
            return None if int(quality[row]) >= BAD else float(values[row])

        out[e] = evaluate_reference(expression, value_of, program.unknown_votes[e] == VOTE_TRIPPED)


def make_stack(program: Program) -> np.ndarray:
    return np.zeros((2, max(program.depth, 1) + 1), dtype=np.float64)
