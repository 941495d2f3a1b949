"""A small declarative validator for the YAML config: fields as data, every error collected.

Each section is a table of `Field`s. `Reader.section()` checks a mapping against its table, reports
unknown keys, missing keys and wrong types with file, line and key path, and returns plain values.
Nothing is ever repaired: a wrong value is an error, never a guess. Drivers and rules use the same
toolkit for their own schemas, which is why it lives on the ground floor, apart from the gateway's own
sections (gatewayd/config).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from core.yamlload import LineDict


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid. Carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    def __reduce__(self):
        return ConfigError, (self.issues,)  # crosses the process boundary of load_config_isolated


class Invalid(ValueError):
    """Raised by a field's converter or check; the message says what would be valid."""


_MISSING = object()


def described(json_schema: dict[str, Any]) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Attach to a converter the JSON Schema of what it accepts, so `gatewayd schema` is generated from the
    same tables the validator reads. A converter without one accepts anything as far as editors know."""

    def attach(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        convert.json_schema = json_schema  # type: ignore[attr-defined]
        return convert

    return attach


def json_schema_of(convert: Callable[[Any], Any]) -> dict[str, Any] | None:
    """What `described` attached to `convert`, or None for a converter that accepts more than a schema says."""
    return getattr(convert, "json_schema", None)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


DURATION_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0},
                             {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|min|h|d)?\s*$"}]}


@described(DURATION_SCHEMA)
def duration(value: Any) -> float:
    """`1s`, `500ms`, `2h`, `1.5m` or a bare number of seconds, to seconds."""
    if isinstance(value, bool):
        raise Invalid("expected a duration such as 500ms, 1s, 5m or 2h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise Invalid(f"{value!r} is not a duration; write e.g. 500ms, 1s, 5m or 2h")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise Invalid("a duration cannot be negative")
    return seconds


POSITIVE_DURATION_SCHEMA = {"anyOf": [
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": r"^\s*(\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)\s*(ms|s|m|min|h|d)?\s*$"}]}


@described(POSITIVE_DURATION_SCHEMA)
def positive_duration(value: Any) -> float:
    """A duration that must be longer than zero (an interval, a timeout)."""
    seconds = duration(value)
    if seconds <= 0:
        raise Invalid("must be longer than zero")
    return seconds


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert`, letting an explicit null through as None."""
    inner = json_schema_of(convert)
    nullable = described({"anyOf": [inner, {"type": "null"}]}) if inner is not None else (lambda function: function)
    return nullable(lambda value: None if value is None else convert(value))


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {value!r}")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            raise Invalid(f"{value} is out of range {minimum}..{maximum}")
        return value

    return described(_bounded("integer", minimum, maximum))(convert)


def _bounded(kind: str, minimum: float | None, maximum: float | None) -> dict[str, Any]:
    bounds = {"minimum": minimum, "maximum": maximum}
    return {"type": kind, **{key: bound for key, bound in bounds.items() if bound is not None}}


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"expected a number, got {value!r}")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            raise Invalid(f"{value} is out of range {minimum}..{maximum}")
        return float(value)

    return described(_bounded("number", minimum, maximum))(convert)


@described({"type": "string", "pattern": r"\S"})
def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty string, got {value!r}")
    return value


@described({"type": "boolean"})
def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    return described({"enum": list(choices)})(convert)


@described({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"})
def identifier(value: Any) -> str:
    """Tag, device and gateway names: letters, digits, and . _ - only, so they are safe in topics and files."""
    value = text(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise Invalid(f"{value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Field:
    """One key of a section: how to convert it, whether it is required, its default and help."""

    convert: Callable[[Any], Any]
    default: Any = _MISSING
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


class Reader:
    """Walks the loaded YAML, collecting issues with their lines; `issues` is empty when all is well.

    `warnings` are what is valid but unusual (check-config prints them and still exits 0): a refusal
    is for what is unsafe or cannot work, a warning for what a reviewer should look at twice."""

    def __init__(self, file: str):
        self.file = file
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, line: int, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, path, message))

    def warn(self, line: int, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(self.file, line, path, message))

    def section(self, node: Any, path: str, line: int, fields: dict[str, Field]) -> dict[str, Any] | None:
        """Validate a mapping against `fields`. Returns the converted values, or None if not a mapping.

        Values that fail keep their key out of the result; callers check `ok` before building objects.
        """
        if node is None:
            node = LineDict()
            node.line, node.key_lines = line, {}
        if not isinstance(node, dict):
            self.error(line, path, f"expected a mapping of keys, got {yaml_kind(node)}")
            return None
        result: dict[str, Any] = {}
        for key in node:
            if key not in fields:
                self.error(self.key_line(node, key), join(path, key), unknown_key_message(key, fields))
        for key, spec in fields.items():
            if key not in node:
                if spec.required:
                    self.error(line or getattr(node, "line", 0), join(path, key), "required key is missing")
                else:
                    result[key] = spec.default
                continue
            try:
                result[key] = spec.convert(node[key])
            except Invalid as exc:
                self.error(self.key_line(node, key), join(path, key), str(exc))
        return result

    def items(self, node: Any, path: str, line: int) -> list[tuple[Any, str, int]]:
        """The items of a list with their paths and lines; an error if `node` is not a list."""
        if node is None:
            return []
        if not isinstance(node, list):
            self.error(line, path, f"expected a list, got {yaml_kind(node)}")
            return []
        lines = getattr(node, "item_lines", [line] * len(node))
        return [(item, f"{path}[{index}]", lines[index]) for index, item in enumerate(node)]

    @staticmethod
    def key_line(node: Any, key: Any) -> int:
        return getattr(node, "key_lines", {}).get(key, getattr(node, "line", 0))

    @property
    def ok(self) -> bool:
        return not self.issues


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def unknown_key_message(key: Any, fields: dict[str, Field]) -> str:
    close = difflib.get_close_matches(str(key), fields, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint} (valid keys: {', '.join(fields)})"


def yaml_kind(node: Any) -> str:
    """What a YAML node is, in the file's own terms (never the loader's class names)."""
    if isinstance(node, dict):
        return "a mapping"
    if isinstance(node, list):
        return "a list"
    if isinstance(node, bool):
        return str(node).lower()
    if isinstance(node, (int, float)):
        return f"the number {node}"
    if isinstance(node, str):
        return f"the text {node!r}"
    return type(node).__name__


def is_mapping(node: Any) -> bool:
    return isinstance(node, (dict, LineDict))
