"""JSON Pointer (RFC 6901): `/a/b/0` names a value inside a decoded JSON document.

`""` is the whole document; each `/token` steps into an object by key or into an array by index.
In a token `~1` stands for `/` and `~0` for `~` (decoded in that order, so `~01` is the key `~1`).
An array index is `0` or a number without leading zeros; `-` (past the end) and anything else
names no element. A pointer that names nothing resolves to `MISSING`, never an exception: a payload
that lacks a field is an outcome for the caller (DECODE_ERROR), not a crash.

    pointer = Pointer.parse("/readings/0/ch4")
    pointer.resolve({"readings": [{"ch4": 12.5}]})   # 12.5
    pointer.resolve({"readings": []}) is MISSING       # True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INDEX = re.compile(r"0|[1-9][0-9]*")
BAD_ESCAPE = re.compile(r"~(?![01])")


class _Missing:
    """What a pointer that names nothing resolves to."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class PointerSyntaxError(ValueError):
    """The text is not a JSON Pointer; the message says what is valid."""


@dataclass(frozen=True, slots=True)
class Pointer:
    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pointer:
        if not isinstance(text, str):
            raise PointerSyntaxError(f"expected a JSON Pointer string such as /value, got {text!r}")
        if text and not text.startswith("/"):
            raise PointerSyntaxError(f"{text!r} is not a JSON Pointer: it starts with / (e.g. /{text}), "
                                     "or is empty for the whole document")
        if BAD_ESCAPE.search(text):
            raise PointerSyntaxError(f"{text!r}: ~ must be followed by 0 (for ~) or 1 (for /)")
        tokens = tuple(token.replace("~1", "/").replace("~0", "~") for token in text.split("/")[1:])
        return cls(text, tokens)

    def resolve(self, document: Any) -> Any:
        """The value this pointer names in `document`, or MISSING."""
        node = document
        for token in self.tokens:
            if isinstance(node, dict):
                node = node.get(token, MISSING)
                if node is MISSING:
                    return MISSING
            elif isinstance(node, list):
                if not INDEX.fullmatch(token) or int(token) >= len(node):
                    return MISSING
                node = node[int(token)]
            else:
                return MISSING
        return node

    def __str__(self) -> str:
        return self.text or '""'
