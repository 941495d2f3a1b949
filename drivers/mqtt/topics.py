"""MQTT topic filters (`+` one level, `#` the rest) matched against topic names, and an index of them.

A filter with wildcards is how one subscription feeds many tags: the device subscribes to
`plant/+/gas/+`, and each tag's own topic fixes the levels that pick its payloads, e.g.
`plant/+/gas/GD-101` (the detector id taken from the last level, any area). `TopicIndex` finds every
item whose filter matches a topic by walking a tree of levels, so a message costs one step per level
rather than one comparison per tag. Per MQTT, wildcards at the first level never match a topic that
starts with `$` (the broker's `$SYS/...`). Pure string work: no transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TopicSyntaxError(ValueError):
    """Not a valid topic filter; the message says why."""


def check_filter(text: Any, wildcards: bool = True) -> str:
    """`text` if it is a valid filter (or, without `wildcards`, a valid topic name); TopicSyntaxError if not."""
    if not isinstance(text, str) or not text:
        raise TopicSyntaxError(f"expected a topic such as plant/+/gas/+, got {text!r}")
    if "\0" in text or len(text.encode("utf-8")) > 65535:
        raise TopicSyntaxError("a topic holds no NUL character and at most 65535 bytes")
    levels = text.split("/")
    for position, level in enumerate(levels):
        if ("+" in level or "#" in level) and not wildcards:
            raise TopicSyntaxError(f"{text!r}: wildcards (+, #) are not allowed here")
        if "+" in level and level != "+":
            raise TopicSyntaxError(f"{text!r}: + must be a whole level, as in a/+/b")
        if "#" in level and (level != "#" or position != len(levels) - 1):
            raise TopicSyntaxError(f"{text!r}: # must be the whole last level, as in a/b/#")
    return text


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a message on `topic` matches `topic_filter`."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    return _match(topic_filter.split("/"), topic.split("/"))


def _match(pattern: list[str], levels: list[str]) -> bool:
    for position, level in enumerate(pattern):
        if level == "#":
            return True
        if position >= len(levels) or (level != "+" and level != levels[position]):
            return False
    return len(pattern) == len(levels)


def covers(outer: str, inner: str) -> bool:
    """Whether every topic `inner` matches is also matched by `outer` (a subscription covering a tag)."""
    outer_levels, inner_levels = outer.split("/"), inner.split("/")
    for position, level in enumerate(outer_levels):
        if level == "#":
            return True
        if position >= len(inner_levels):
            return False
        mine = inner_levels[position]
        if mine == "#" or (level != "+" and (mine == "+" or mine != level)):
            return False
    return len(outer_levels) == len(inner_levels)


class _Node:
    __slots__ = ("children", "items", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.items: list[Any] = []  # of filters ending here
        self.rest: list[Any] = []  # of filters ending here with /#


class TopicIndex:
    """Items keyed by topic filter; `lookup(topic)` gives every item whose filter matches, in the order
    they were added."""

    def __init__(self, entries: Iterable[tuple[str, Any]] = ()) -> None:
        self._root = _Node()
        self._order: dict[int, int] = {}
        for topic_filter, item in entries:
            self.add(topic_filter, item)

    def add(self, topic_filter: str, item: Any) -> None:
        node = self._root
        levels = topic_filter.split("/")
        for level in levels[:-1] if levels[-1] == "#" else levels:
            node = node.children.setdefault(level, _Node())
        (node.rest if levels[-1] == "#" else node.items).append(item)
        self._order.setdefault(id(item), len(self._order))

    def lookup(self, topic: str) -> list[Any]:
        found: list[Any] = []
        self._walk(self._root, topic.split("/"), 0, topic.startswith("$"), found)
        if len(found) > 1:
            found.sort(key=lambda item: self._order[id(item)])
        return found

    def _walk(self, node: _Node, levels: list[str], depth: int, system: bool, found: list[Any]) -> None:
        wild = not (system and depth == 0)
        if wild:
            found.extend(node.rest)
        if depth == len(levels):
            found.extend(node.items)
            return
        exact = node.children.get(levels[depth])
        if exact is not None:
            self._walk(exact, levels, depth + 1, system, found)
        plus = node.children.get("+") if wild else None
        if plus is not None:
            self._walk(plus, levels, depth + 1, system, found)
