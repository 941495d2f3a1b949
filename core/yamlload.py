"""YAML loading that remembers where every key and item came from, and which files were read.

Validation errors must name the file and line, so mappings and sequences are loaded into dict and
list subclasses that carry the line of each key and item (1-based, as editors show them).

A config is more than its main file (a GDS panel's `profile_file`, a shipped profile): whatever reads
a file while a config is parsed does so through `read_source`, which notes the file's path and SHA-256
in the recording `recording_sources` keeps. The compiled-config cache keys its entries on that list,
and `config_sha256` upstream is computed over it (gatewayd.config.model.Config.sources), so an edit of
any file the parse read is a new config, not a stale one.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class SourceFile:
    """A file a config was built from: its resolved path and the SHA-256 (hex) of the bytes parsed."""

    path: Path
    sha256: str


_recording: contextvars.ContextVar[list[SourceFile] | None] = contextvars.ContextVar("sources", default=None)


@contextlib.contextmanager
def recording_sources(main: Path, source: bytes) -> Iterator[list[SourceFile]]:
    """Note every file read through `read_source` inside the block; the main file's bytes come first."""
    sources = [SourceFile(Path(main).resolve(), hashlib.sha256(source).hexdigest())]
    token = _recording.set(sources)
    try:
        yield sources
    finally:
        _recording.reset(token)


def read_source(path: Path) -> bytes:
    """The bytes of a file a config is built from, noted (once per path) in the current recording."""
    data = Path(path).read_bytes()
    sources = _recording.get()
    if sources is not None:
        resolved = Path(path).resolve()
        if all(known.path != resolved for known in sources):
            sources.append(SourceFile(resolved, hashlib.sha256(data).hexdigest()))
    return data


class LineDict(dict):
    """A mapping that knows the line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):
    """A sequence that knows the line of itself and of each of its items."""

    line: int = 0
    item_lines: list[int]


class DuplicateKeyError(yaml.MarkedYAMLError):
    """The same key twice in one mapping: YAML silently keeps the last one, we refuse."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain scalar", key_node.start_mark
                )
            if key in result:
                raise DuplicateKeyError(
                    "while reading a mapping", node.start_mark,
                    f"key {key!r} appears twice", key_node.start_mark,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def load_yaml(text: str, filename: str = "<string>") -> Any:
    """Parse one YAML document into LineDict/LineList/scalars. Raises yaml.YAMLError on bad syntax."""
    loader = _Loader(text)
    loader.name = filename
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
