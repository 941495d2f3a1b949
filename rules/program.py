"""Many expressions as one packed bytecode program, run by one numba interpreter kernel.

One kernel compiled once (and cached) serves any number of expressions, so 10,000 expression rules
cost no extra compile time: adding a rule only adds rows to the arrays. `pack()` turns `Expression`s
(tags resolved to point-table rows) into arrays; `run_programs` writes 0 / 1 / UNKNOWN per expression.

An expression is UNKNOWN when any tag it reads has bad quality (>= 16) or no value (NaN), or when
its result is NaN; `rules.isa` then holds the alarm's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from gatewayd.types import QUALITY_BAD_MIN
from rules.expr import (
    ABS,
    ADD,
    AND,
    CONST,
    DIV,
    EQ,
    GE,
    GT,
    LE,
    LT,
    MIN,
    MUL,
    NE,
    NEG,
    NOT,
    OR,
    SUB,
    TAG,
    UNKNOWN,
    Expression,
    evaluate_reference,
)

BAD = QUALITY_BAD_MIN


@dataclass(frozen=True)
class Program:
    """Packed bytecode of `count` expressions. Expression e runs code[start[e]:start[e+1]] and depends on
    rows[dep_start[e]:dep_start[e+1]]."""

    op: np.ndarray  # int32
    arg: np.ndarray  # int32: constant index or point-table row
    constants: np.ndarray  # float64
    start: np.ndarray  # int64, count + 1
    dep_start: np.ndarray  # int64, count + 1
    dep_rows: np.ndarray  # int64
    depth: int
    expressions: tuple[Expression, ...]
    rows: tuple[tuple[int, ...], ...]  # per expression, the row of each of its tags

    @property
    def count(self) -> int:
        return len(self.expressions)


def pack(expressions: Sequence[Expression], tag_rows: Mapping[str, int]) -> Program:
    ops: list[int] = []
    args: list[int] = []
    constants: list[float] = []
    constant_index: dict[float, int] = {}
    start, dep_start, dep_rows, all_rows = [0], [0], [], []
    depth = 1
    for expression in expressions:
        rows = tuple(tag_rows[tag] for tag in expression.tags)
        all_rows.append(rows)
        for opcode, arg in expression.code:
            if opcode == TAG:
                arg = rows[arg]
            elif opcode == CONST:
                value = expression.constants[arg]
                if value not in constant_index:
                    constant_index[value] = len(constants)
                    constants.append(value)
                arg = constant_index[value]
            ops.append(opcode)
            args.append(arg)
        start.append(len(ops))
        dep_rows.extend(sorted(set(rows)))
        dep_start.append(len(dep_rows))
        depth = max(depth, expression.depth)
    return Program(np.array(ops, dtype=np.int32), np.array(args, dtype=np.int32),
                   np.array(constants or [0.0], dtype=np.float64), np.array(start, dtype=np.int64),
                   np.array(dep_start, dtype=np.int64), np.array(dep_rows, dtype=np.int64), depth,
                   tuple(expressions), tuple(all_rows))


@njit(cache=True, nogil=True, error_model="numpy")
def run_programs(values, quality, op, arg, constants, start, dep_start, dep_rows, stack, out):
    """Evaluate every packed expression into `out` (uint8: 0, 1 or UNKNOWN). `stack` is scratch space."""
    for e in range(out.shape[0]):
        usable = True
        for d in range(dep_start[e], dep_start[e + 1]):
            row = dep_rows[d]
            if quality[row] >= BAD or np.isnan(values[row]):
                usable = False
                break
        if not usable:
            out[e] = UNKNOWN
            continue
        top = -1
        for pc in range(start[e], start[e + 1]):
            code = op[pc]
            if code == TAG:
                top += 1
                stack[top] = values[arg[pc]]
            elif code == CONST:
                top += 1
                stack[top] = constants[arg[pc]]
            elif code == NOT:
                x = stack[top]
                stack[top] = 0.0 if (x == x and x != 0.0) else 1.0
            elif code == NEG:
                stack[top] = -stack[top]
            elif code == ABS:
                stack[top] = abs(stack[top])
            else:
                b = stack[top]
                top -= 1
                a = stack[top]
                if code == GT:
                    r = 1.0 if a > b else 0.0
                elif code == LT:
                    r = 1.0 if a < b else 0.0
                elif code == GE:
                    r = 1.0 if a >= b else 0.0
                elif code == LE:
                    r = 1.0 if a <= b else 0.0
                elif code == EQ:
                    r = 1.0 if a == b else 0.0
                elif code == NE:
                    r = 1.0 if a != b else 0.0
                elif code == AND:
                    r = 1.0 if (a == a and a != 0.0) and (b == b and b != 0.0) else 0.0
                elif code == OR:
                    r = 1.0 if (a == a and a != 0.0) or (b == b and b != 0.0) else 0.0
                elif code == ADD:
                    r = a + b
                elif code == SUB:
                    r = a - b
                elif code == MUL:
                    r = a * b
                elif code == DIV:
                    r = a / b
                elif code == MIN:
                    r = min(a, b)
                else:  # MAX
                    r = max(a, b)
                stack[top] = r
        result = stack[0]
        if result != result:
            out[e] = UNKNOWN
        elif result != 0.0:
            out[e] = 1
        else:
            out[e] = 0


def run_programs_reference(values, quality, program: Program, out) -> None:
    """Plain-Python twin: evaluates each expression's tree (not its bytecode) over the same rows."""
    for e, expression in enumerate(program.expressions):
        row_of = dict(zip(expression.tags, program.rows[e]))
        out[e] = evaluate_reference(
            expression,
            lambda tag, row_of=row_of: float(values[row_of[tag]]),
            lambda tag, row_of=row_of: int(quality[row_of[tag]]) < BAD and values[row_of[tag]] == values[row_of[tag]],
        )


def make_stack(program: Program) -> np.ndarray:
    return np.zeros(max(program.depth, 1) + 1, dtype=np.float64)
