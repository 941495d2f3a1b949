"""The bytecode interpreter kernel of `rules.program`, which packs the expressions and holds the
plain-Python twin. Compiled with numpy's error model: a division by zero gives inf or NaN (IEEE 754), as
`rules.expr` evaluates it, never an exception."""

from __future__ import annotations

import numpy as np
from numba import njit

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
)
from rules.program import BAD


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

