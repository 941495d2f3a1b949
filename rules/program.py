"""Many expressions as one packed bytecode program, run by one interpreter kernel (`rules.kernels.program`).

One kernel compiled once (ahead of time, `rules.kernels.build`) serves any number of expressions, so
10,000 expression rules cost no extra compile time: adding a rule only adds rows to the arrays.
`pack()` turns `Expression`s (tags resolved to point-table rows) into arrays; `run_programs` writes
0 / 1 / UNKNOWN per expression.

The interpreter follows the three-valued logic of `rules.expr`: each stack slot holds bounds
[low, high]. A tag with bad quality (>= 16) or no value (NaN) pushes [-inf, +inf]; a condition is
[0, 0] false, [1, 1] true, [0, 1] unknown. An expression is UNKNOWN when its result is not decided
by the inputs that are usable; `rules.isa` then holds the alarm's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.types import QUALITY_BAD_MIN
from rules.expr import (
    CONST,
    TAG,
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
