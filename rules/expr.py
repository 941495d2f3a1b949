"""Alarm expressions: parsed with Python's `ast` under a whitelist, checked, and lowered to stack bytecode.

    >>> expr = parse_expression("PT101 > 1.2 and not XV103", {"PT101", "XV103"})
    >>> expr.tags
    ('PT101', 'XV103')

Allowed: numbers, `true`/`false`, tag names, `+ - * /`, unary minus, comparisons (chained too:
`0 < LT101 < 5`), `and`, `or`, `not`, `abs(x)`, `min(a, b, ...)`, `max(a, b, ...)` and
`vote(k, c1, c2, ...)` (true when at least k of the conditions are). A tag whose name is not a Python
identifier (`FIC-101.PV`, `101PT`) is written in backticks: `` `FIC-101.PV` > 3 ``. Anything else
(attribute access, subscripts, other calls, names that are not tags, `**`, `%`, `in`, strings,
lambdas...) is rejected with an `ExpressionError` naming the offending token and its column.

The validated tree (nested tuples) is kept on the frozen `Expression`: the pure-Python reference
evaluates the tree, the numba interpreter in `rules.program` runs the bytecode lowered from it.

Three-valued (Kleene) logic, so that one failed transmitter does not blind a redundant condition:
a tag without a usable value is an unknown number, which may be anything. Numbers are evaluated as
bounds [low, high] (a known number is [x, x], an unknown one [-inf, +inf]); conditions are true,
false or unknown. A comparison is decided when the bounds decide it (`max(A, B) >= 3.6` is true
when A >= 3.6 whatever B is); `true or unknown` is true, `false and unknown` is false, `not unknown`
is unknown. Division by zero follows IEEE 754 (±inf); a NaN (0/0, inf - inf) is an unknown number.
Numbers in a boolean place (`not XV103`, `XV103 and ...`) are true when non-zero. A vote counts an
unknown condition as tripped or as healthy, as the caller packs it (`rules.program.pack`).
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

# Opcodes of the stack machine; `arg` is a constant index (CONST) or a tag slot (TAG), else 0.
# VOTE's arg packs n | k << 8 | (1 if unknown counts healthy) << 16 (`rules.program.pack` sets the mode).
CONST, TAG, ADD, SUB, MUL, DIV, NEG, NOT, AND, OR, LT, LE, GT, GE, EQ, NE, ABS, MIN, MAX, VOTE = range(20)
MAX_DEPTH = 32
MAX_LENGTH = 2000
MAX_NESTING = 100  # levels of the syntax tree; the validating walk recurses once per level

UNKNOWN = 2  # result of a condition that cannot be decided (a tag without a usable value, or NaN)
VOTE_TRIPPED, VOTE_HEALTHY = "tripped", "healthy"  # how a vote counts an unknown condition

_BINARY = {ast.Add: ("+", ADD), ast.Sub: ("-", SUB), ast.Mult: ("*", MUL), ast.Div: ("/", DIV)}
_COMPARE = {ast.Lt: ("<", LT), ast.LtE: ("<=", LE), ast.Gt: (">", GT), ast.GtE: (">=", GE),
            ast.Eq: ("==", EQ), ast.NotEq: ("!=", NE)}
_CMP_OPCODES = {symbol: code for symbol, code in _COMPARE.values()}
_BIN_OPCODES = {symbol: code for symbol, code in _BINARY.values()}
_FORBIDDEN_OPERATORS = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|",
                        ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@",
                        ast.Invert: "~", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
FUNCTIONS = {"abs": (1, 1), "min": (2, 16), "max": (2, 16), "vote": (3, 17)}  # vote: k, then 2..16 conditions
_QUOTED = re.compile(r"`([^`]+)`")
_CONSTANT_NAMES = {"true": 1.0, "false": 0.0, "True": 1.0, "False": 0.0}
ALLOWED = ("numbers, tag names, + - * /, comparisons, and/or/not, abs(), min(), max(), vote(k, ...); "
           "quote other tag names in backticks")


class ExpressionError(ValueError):
    """A rejected expression; the message names the offending token and where it is."""


@dataclass(frozen=True)
class Expression:
    """A validated expression: its source, the tags it reads (in first-use order), tree and bytecode.

    `code` holds (opcode, arg) pairs; a TAG arg indexes `tags`, a CONST arg indexes `constants`.
    """

    source: str
    tags: tuple[str, ...]
    tree: tuple
    code: tuple[tuple[int, int], ...]
    constants: tuple[float, ...]
    depth: int

    def __str__(self) -> str:
        return self.source


def parse_expression(source: Any, tag_names: Iterable[str] | Callable[[str], bool]) -> Expression:
    """Validate `source` against the whitelist and the known tag names; raises ExpressionError."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError(f"expected an expression as text, got {source!r}")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(source)} characters long; at most {MAX_LENGTH}")
    if callable(tag_names):
        known, candidates = tag_names, None
    else:  # a set or mapping is looked up as it is: copying 100,000 names per expression adds up
        candidates = tag_names if isinstance(tag_names, (AbstractSet, Mapping)) else frozenset(tag_names)
        known = candidates.__contains__
    quoted: dict[str, str] = {}

    def quote(match: re.Match) -> str:
        placeholder = f"_q{len(quoted)}_"
        quoted[placeholder] = match.group(1)
        return placeholder.ljust(len(match.group(0)))  # keep columns where they were

    text = _QUOTED.sub(quote, source.strip())
    if "`" in text:
        raise ExpressionError(f"unbalanced backtick at column {text.index('`') + 1}")
    try:
        module = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        column = exc.offset or 0
        token = _token_at(text, column - 1)
        raise ExpressionError(f"syntax error at column {column} near {token!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"expression is nested too deeply; at most {MAX_NESTING} levels") from None
    if len(text) > MAX_NESTING and _nesting(module.body) > MAX_NESTING:  # each level takes a character
        raise ExpressionError(f"expression is nested too deeply; at most {MAX_NESTING} levels")
    builder = _Builder(text, known, candidates, quoted)
    tree, _ = builder.visit(module.body)
    code: list[tuple[int, int]] = []
    constants: list[float] = []
    tags: list[str] = []
    depth = _lower(tree, code, constants, tags)
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression is nested too deeply (stack depth {depth}, at most {MAX_DEPTH})")
    return Expression(source.strip(), tuple(tags), tree, tuple(code), tuple(constants), depth)


def _nesting(node: ast.AST) -> int:
    """Depth of the syntax tree, found without recursion (the tree may be deeper than the stack)."""
    deepest, pending = 0, [(node, 1)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _token_at(text: str, index: int) -> str:
    index = max(0, min(index, len(text) - 1)) if text else 0
    match = re.match(r"\w+|\S", text[index:])
    return match.group(0) if match else text[index:index + 1]


class _Builder:
    """Walks the Python AST, rejecting what the whitelist does not allow, building the tuple tree."""

    def __init__(self, text: str, known: Callable[[str], bool], candidates: Iterable[str] | None,
                 quoted: dict[str, str]):
        self.text, self.known, self.candidates, self.quoted = text, known, candidates, quoted

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        column = getattr(node, "col_offset", 0) + 1
        return ExpressionError(f"{what} at column {column}; allowed: {ALLOWED}")

    def segment(self, node: ast.AST) -> str:
        text = ast.get_source_segment(self.text, node) or type(node).__name__
        for placeholder, name in self.quoted.items():
            text = text.replace(placeholder, f"`{name}`")
        return text

    def visit(self, node: ast.AST) -> tuple[tuple, str]:
        """Returns (tree, kind) where kind is 'num' or 'bool'."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return ("const", 1.0 if node.value else 0.0), "bool"
            if isinstance(node.value, (int, float)) and math.isfinite(node.value):
                return ("const", float(node.value)), "num"
            raise self.fail(node, f"constant {self.segment(node)!r} is not allowed")
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                operand, _ = self.visit(node.operand)
                return ("not", operand), "bool"
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                operand = self.number(node.operand)
                if isinstance(node.op, ast.UAdd):
                    return operand, "num"
                if operand[0] == "const":
                    return ("const", -operand[1]), "num"
                return ("neg", operand), "num"
            raise self.fail(node, f"operator {_FORBIDDEN_OPERATORS.get(type(node.op), '?')!r} is not allowed")
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                symbol = _FORBIDDEN_OPERATORS.get(type(node.op), type(node.op).__name__)
                column = self._operator_column(node.left, node.right, symbol)
                raise ExpressionError(f"operator {symbol!r} is not allowed at column {column}; allowed: {ALLOWED}")
            return ("bin", _BINARY[type(node.op)][0], self.number(node.left), self.number(node.right)), "num"
        if isinstance(node, ast.BoolOp):
            kind = "and" if isinstance(node.op, ast.And) else "or"
            return (kind, tuple(self.visit(value)[0] for value in node.values)), "bool"
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            parts = []
            for op, left, right in zip(node.ops, operands, operands[1:]):
                if type(op) not in _COMPARE:
                    symbol = _FORBIDDEN_OPERATORS.get(type(op), type(op).__name__)
                    column = self._operator_column(left, right, symbol)
                    raise ExpressionError(f"operator {symbol!r} is not allowed at column {column}; "
                                          f"allowed: {ALLOWED}")
                parts.append(("cmp", _COMPARE[type(op)][0], self.number(left), self.number(right)))
            return (parts[0] if len(parts) == 1 else ("and", tuple(parts))), "bool"
        if isinstance(node, ast.Call):
            tree = self.call(node)
            return tree, "bool" if tree[0] == "vote" else "num"
        if isinstance(node, ast.Attribute):
            raise self.fail(node, f"attribute access {self.segment(node)!r} is not allowed")
        if isinstance(node, ast.Subscript):
            raise self.fail(node, f"subscript {self.segment(node)!r} is not allowed")
        if isinstance(node, ast.IfExp):
            raise self.fail(node, f"conditional expression {self.segment(node)!r} is not allowed")
        raise self.fail(node, f"{self.segment(node)!r} ({type(node).__name__}) is not allowed")

    def _operator_column(self, left: ast.AST, right: ast.AST, symbol: str) -> int:
        start = getattr(left, "end_col_offset", 0) or 0
        found = self.text.find(symbol.split()[0], start)
        return (found if found >= 0 else start) + 1

    def number(self, node: ast.AST) -> tuple:
        tree, kind = self.visit(node)
        if kind != "num":
            raise self.fail(node, f"{self.segment(node)!r} is a condition where a number is needed")
        return tree

    def name(self, node: ast.Name) -> tuple[tuple, str]:
        identifier = node.id
        if identifier in self.quoted:
            identifier = self.quoted[identifier]
        elif identifier in _CONSTANT_NAMES:
            return ("const", _CONSTANT_NAMES[identifier]), "bool"
        if self.known(identifier):
            return ("tag", identifier), "num"
        hint = ""
        if self.candidates is not None:
            close = difflib.get_close_matches(identifier, list(self.candidates), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        if identifier in FUNCTIONS:
            raise self.fail(node, f"{identifier!r} is a function; call it as {identifier}(...)")
        raise ExpressionError(f"{identifier!r} at column {node.col_offset + 1} is not a tag{hint}")

    def call(self, node: ast.Call) -> tuple:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = self.segment(node.func)
            raise self.fail(node, f"call of {name!r} is not allowed (only abs, min, max, vote)")
        if node.keywords:
            raise self.fail(node, f"keyword arguments in {self.segment(node)!r} are not allowed")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(node, f"* arguments in {self.segment(node)!r} are not allowed")
        name = node.func.id
        low, high = FUNCTIONS[name]
        if not low <= len(node.args) <= high:
            wanted = "one argument" if low == high else f"{low} to {high} arguments"
            raise self.fail(node, f"{name}() takes {wanted}, got {len(node.args)} in {self.segment(node)!r}")
        if name == "vote":
            return self.vote(node)
        return ("call", name, tuple(self.number(arg) for arg in node.args))

    def vote(self, node: ast.Call) -> tuple:
        """vote(k, c1, ..., cn): k a whole number from 1 to n, then the n conditions (2oo3: k=2, n=3)."""
        first, conditions = node.args[0], node.args[1:]
        k = first.value if isinstance(first, ast.Constant) and not isinstance(first.value, bool) else None
        if not isinstance(k, int) or not 1 <= k <= len(conditions):
            raise self.fail(first, f"vote() needs k, a whole number from 1 to {len(conditions)} (the number of "
                                   f"conditions), first; got {self.segment(first)!r}")
        return ("vote", k, tuple(self.visit(arg)[0] for arg in conditions))


def constant_key(value: float) -> str:
    """Constants are shared by their bits: -0 and 0 compare equal but divide differently."""
    return value.hex()


def _lower(tree: tuple, code: list, constants: list, tags: list) -> int:
    """Append the postfix code of `tree`; return the stack depth it needs."""
    kind = tree[0]
    if kind == "const":
        keys = [constant_key(c) for c in constants]
        if constant_key(tree[1]) not in keys:
            keys.append(constant_key(tree[1]))
            constants.append(tree[1])
        code.append((CONST, keys.index(constant_key(tree[1]))))
        return 1
    if kind == "tag":
        if tree[1] not in tags:
            tags.append(tree[1])
        code.append((TAG, tags.index(tree[1])))
        return 1
    if kind in ("neg", "not"):
        depth = _lower(tree[1], code, constants, tags)
        code.append((NEG if kind == "neg" else NOT, 0))
        return depth
    if kind in ("bin", "cmp"):
        left = _lower(tree[2], code, constants, tags)
        right = _lower(tree[3], code, constants, tags)
        code.append(((_BIN_OPCODES if kind == "bin" else _CMP_OPCODES)[tree[1]], 0))
        return max(left, right + 1)
    if kind == "vote":
        depth = 0
        for position, item in enumerate(tree[2]):  # all n conditions are on the stack at once
            depth = max(depth, _lower(item, code, constants, tags) + position)
        code.append((VOTE, len(tree[2]) | tree[1] << 8))
        return depth
    if kind in ("and", "or", "call"):
        items = tree[1] if kind != "call" else tree[2]
        opcode = {"and": AND, "or": OR}.get(kind) or {"abs": ABS, "min": MIN, "max": MAX}[tree[1]]
        depth = _lower(items[0], code, constants, tags)
        if kind == "call" and tree[1] == "abs":
            code.append((ABS, 0))
            return depth
        for item in items[1:]:
            depth = max(depth, _lower(item, code, constants, tags) + 1)
            code.append((opcode, 0))
        return depth
    raise AssertionError(kind)


# --- the pure-Python reference: evaluates the tree, independent of the bytecode -----------------------
#
# Numbers are (low, high) bounds, conditions True / False / None (unknown). Written from the rules in the
# module docstring, not from the interpreter, so that the two can check each other.

INF = math.inf
ANY = (-INF, INF)  # a number that may be anything: a tag without a usable value, or a NaN


def _bounds(low: float, high: float) -> tuple[float, float]:
    """A NaN bound (inf - inf, 0 * inf, ...) says nothing: the number may be anything."""
    return ANY if math.isnan(low) or math.isnan(high) else (low, high)


def _point(x: tuple[float, float]) -> bool:
    return x[0] == x[1]


def _smaller(a: float, b: float) -> float:
    return b if b < a else a


def _larger(a: float, b: float) -> float:
    return b if b > a else a


def divide(a: float, b: float) -> float:
    """IEEE 754 division, as numba's numpy error model does it: x/0 is ±inf, 0/0 is NaN."""
    if b == 0.0:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _corners(a: tuple[float, float], b: tuple[float, float], combine: Callable) -> tuple[float, float]:
    """Bounds of a product or quotient of two ranges: the smallest and largest of the corner results
    (+ 0.0 makes every zero a positive zero, so that ties come out the same everywhere)."""
    results = [combine(x, y) + 0.0 for x in a for y in b]
    if any(math.isnan(r) for r in results):
        return ANY
    return min(results), max(results)


def _arithmetic(symbol: str, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    if symbol == "+":
        return _bounds(a[0] + b[0], a[1] + b[1])
    if symbol == "-":
        return _bounds(a[0] - b[1], a[1] - b[0])
    if _point(a) and _point(b):  # two known numbers: exactly IEEE 754
        result = a[0] * b[0] if symbol == "*" else divide(a[0], b[0])
        return _bounds(result, result)
    if symbol == "*":
        return _corners(a, b, lambda x, y: x * y)
    if b[0] <= 0.0 <= b[1]:  # divided by a range holding zero: anything
        return ANY
    return _corners(a, b, divide)


def _compare(symbol: str, a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """Decided when every value in a's range compares the same way with every value in b's."""
    if symbol in ("==", "!="):
        if _point(a) and _point(b) and a[0] == b[0]:
            equal = True
        elif a[1] < b[0] or b[1] < a[0]:
            equal = False
        else:
            return None
        return equal if symbol == "==" else not equal
    if symbol in ("<", "<="):
        a, b, symbol = b, a, ">" if symbol == "<" else ">="
    if (a[0] > b[1]) if symbol == ">" else (a[0] >= b[1]):
        return True
    if (a[1] <= b[0]) if symbol == ">" else (a[1] < b[0]):
        return False
    return None


def _absolute(x: tuple[float, float]) -> tuple[float, float]:
    low, high = x
    if low >= 0.0:
        return abs(low), abs(high)
    if high <= 0.0:
        return abs(high), abs(low)
    return 0.0, _larger(-low, high)


def number_bounds(tree: tuple, value_of: Callable[[str], float | None]) -> tuple[float, float]:
    """The range a numeric tree's value lies in; `value_of` gives None for a tag without a usable value."""
    kind = tree[0]
    if kind == "const":
        return tree[1], tree[1]
    if kind == "tag":
        value = value_of(tree[1])
        return ANY if value is None or math.isnan(value) else (value, value)
    if kind == "neg":
        low, high = number_bounds(tree[1], value_of)
        return -high, -low
    if kind == "bin":
        return _arithmetic(tree[1], number_bounds(tree[2], value_of), number_bounds(tree[3], value_of))
    if kind == "call":
        args = [number_bounds(arg, value_of) for arg in tree[2]]
        if tree[1] == "abs":
            return _absolute(args[0])
        pick = _smaller if tree[1] == "min" else _larger
        low, high = args[0]
        for other_low, other_high in args[1:]:
            low, high = pick(low, other_low), pick(high, other_high)
        return low, high
    raise AssertionError(kind)


def condition(tree: tuple, value_of: Callable[[str], float | None], vote_unknown: bool = True) -> bool | None:
    """True, False or None (unknown). A number in a boolean place is true when it cannot be zero, false
    when it is zero. `vote_unknown` is what a vote counts an unknown condition as (True: tripped)."""
    kind = tree[0]
    if kind == "not":
        inner = condition(tree[1], value_of, vote_unknown)
        return None if inner is None else not inner
    if kind in ("and", "or"):
        results = [condition(item, value_of, vote_unknown) for item in tree[1]]  # no short-circuit: all pure
        decisive = kind == "or"  # True decides an `or`, False an `and`
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    if kind == "cmp":
        return _compare(tree[1], number_bounds(tree[2], value_of), number_bounds(tree[3], value_of))
    if kind == "vote":
        results = [condition(item, value_of, vote_unknown) for item in tree[2]]
        tripped = sum(1 for r in results if r is True or (r is None and vote_unknown))
        return tripped >= tree[1]
    low, high = number_bounds(tree, value_of)
    if low == 0.0 and high == 0.0:
        return False
    if low > 0.0 or high < 0.0:
        return True
    return None


def evaluate_reference(expression: Expression, value_of: Callable[[str], float | None],
                       vote_unknown: bool = True) -> int:
    """0 false, 1 true, UNKNOWN when the inputs that are usable do not decide it."""
    result = condition(expression.tree, value_of, vote_unknown)
    return UNKNOWN if result is None else int(result)
