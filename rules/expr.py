"""Alarm expressions: parsed with Python's `ast` under a whitelist, checked, and lowered to stack bytecode.

    >>> expr = parse_expression("PT101 > 1.2 and not XV103", {"PT101", "XV103"})
    >>> expr.tags
    ('PT101', 'XV103')

Allowed: numbers, `true`/`false`, tag names, `+ - * /`, unary minus, comparisons (chained too:
`0 < LT101 < 5`), `and`, `or`, `not`, `abs(x)`, `min(a, b, ...)`, `max(a, b, ...)`. A tag whose name
is not a Python identifier (`FIC-101.PV`, `101PT`) is written in backticks: `` `FIC-101.PV` > 3 ``.
Anything else (attribute access, subscripts, other calls, names that are not tags, `**`, `%`, `in`,
strings, lambdas...) is rejected with an `ExpressionError` naming the offending token and its column.

The validated tree (nested tuples) is kept on the frozen `Expression`: the pure-Python reference
evaluates the tree, the numba interpreter in `rules.program` runs the bytecode lowered from it.

Numbers in a boolean place (`not XV103`, `XV103 and ...`) are true when non-zero. Division by zero
follows IEEE 754 (inf, or NaN for 0/0); comparisons with NaN are false. If the whole expression
yields NaN its result is unknown, just like an expression over a tag without a usable value.
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
CONST, TAG, ADD, SUB, MUL, DIV, NEG, NOT, AND, OR, LT, LE, GT, GE, EQ, NE, ABS, MIN, MAX = range(19)
OPCODE_NAMES = ("CONST", "TAG", "ADD", "SUB", "MUL", "DIV", "NEG", "NOT", "AND", "OR", "LT", "LE", "GT", "GE",
                "EQ", "NE", "ABS", "MIN", "MAX")
MAX_DEPTH = 32
MAX_LENGTH = 2000
MAX_NESTING = 100  # levels of the syntax tree; the validating walk recurses once per level

UNKNOWN = 2  # result of a condition that cannot be decided (a tag without a usable value, or NaN)

_BINARY = {ast.Add: ("+", ADD), ast.Sub: ("-", SUB), ast.Mult: ("*", MUL), ast.Div: ("/", DIV)}
_COMPARE = {ast.Lt: ("<", LT), ast.LtE: ("<=", LE), ast.Gt: (">", GT), ast.GtE: (">=", GE),
            ast.Eq: ("==", EQ), ast.NotEq: ("!=", NE)}
_CMP_OPCODES = {symbol: code for symbol, code in _COMPARE.values()}
_BIN_OPCODES = {symbol: code for symbol, code in _BINARY.values()}
_FORBIDDEN_OPERATORS = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|",
                        ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@",
                        ast.Invert: "~", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
FUNCTIONS = {"abs": (1, 1), "min": (2, 16), "max": (2, 16)}
_QUOTED = re.compile(r"`([^`]+)`")
_CONSTANT_NAMES = {"true": 1.0, "false": 0.0, "True": 1.0, "False": 0.0}
ALLOWED = ("numbers, tag names, + - * /, comparisons, and/or/not, abs(), min(), max(); "
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
            return self.call(node), "num"
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
            raise self.fail(node, f"call of {name!r} is not allowed (only abs, min, max)")
        if node.keywords:
            raise self.fail(node, f"keyword arguments in {self.segment(node)!r} are not allowed")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(node, f"* arguments in {self.segment(node)!r} are not allowed")
        name = node.func.id
        low, high = FUNCTIONS[name]
        if not low <= len(node.args) <= high:
            wanted = "one argument" if low == high else f"{low} to {high} arguments"
            raise self.fail(node, f"{name}() takes {wanted}, got {len(node.args)} in {self.segment(node)!r}")
        return ("call", name, tuple(self.number(arg) for arg in node.args))


def _lower(tree: tuple, code: list, constants: list, tags: list) -> int:
    """Append the postfix code of `tree`; return the stack depth it needs."""
    kind = tree[0]
    if kind == "const":
        if tree[1] not in constants:
            constants.append(tree[1])
        code.append((CONST, constants.index(tree[1])))
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

def truth(x: float) -> bool:
    """Numbers in a boolean place: true when non-zero; NaN is false."""
    return x == x and x != 0.0


def divide(a: float, b: float) -> float:
    """IEEE 754 division, as numba's numpy error model does it: x/0 is ±inf, 0/0 is NaN."""
    if b == 0.0:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def minimum(a: float, b: float) -> float:
    return min(a, b)


def maximum(a: float, b: float) -> float:
    return max(a, b)


_REF_BIN = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": divide}
_REF_CMP = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def evaluate_tree(tree: tuple, value_of: Callable[[str], float]) -> float:
    """Evaluate the tree; booleans come back as 1.0 / 0.0."""
    kind = tree[0]
    if kind == "const":
        return tree[1]
    if kind == "tag":
        return value_of(tree[1])
    if kind == "neg":
        return -evaluate_tree(tree[1], value_of)
    if kind == "not":
        return 0.0 if truth(evaluate_tree(tree[1], value_of)) else 1.0
    if kind == "bin":
        return _REF_BIN[tree[1]](evaluate_tree(tree[2], value_of), evaluate_tree(tree[3], value_of))
    if kind == "cmp":
        return 1.0 if _REF_CMP[tree[1]](evaluate_tree(tree[2], value_of), evaluate_tree(tree[3], value_of)) else 0.0
    if kind in ("and", "or"):
        results = [truth(evaluate_tree(item, value_of)) for item in tree[1]]  # no short-circuit: all are pure
        return 1.0 if (all(results) if kind == "and" else any(results)) else 0.0
    if kind == "call":
        args = [evaluate_tree(arg, value_of) for arg in tree[2]]
        if tree[1] == "abs":
            return abs(args[0])
        result = args[0]
        for arg in args[1:]:
            result = (minimum if tree[1] == "min" else maximum)(result, arg)
        return result
    raise AssertionError(kind)


def evaluate_reference(expression: Expression, value_of: Callable[[str], float],
                       usable: Callable[[str], bool]) -> int:
    """0 false, 1 true, UNKNOWN when a tag has no usable value or the result is NaN."""
    if not all(usable(tag) for tag in expression.tags):
        return UNKNOWN
    result = evaluate_tree(expression.tree, value_of)
    if result != result:
        return UNKNOWN
    return 1 if result != 0.0 else 0
