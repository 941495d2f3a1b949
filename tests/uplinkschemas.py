"""The JSON Schemas of docs/schemas/, loaded as a receiver would, for the tests that check real output against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
BASE = "https://schemas.gatewayd.invalid/uplink/"


def documents() -> dict[str, dict]:
    """Every schema file by its path under docs/schemas/."""
    return {path.relative_to(SCHEMAS).as_posix(): json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(SCHEMAS.rglob("*.json"))}


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for `name` (e.g. "batch-1.1.json"), resolving its $refs among the other files."""
    resources = ((BASE + path, Resource.from_contents(doc)) for path, doc in documents().items())
    registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(documents()[name], registry=registry)


def event_kinds_with_schema() -> set[str]:
    return {path.removeprefix("events/").removesuffix(".json") for path in documents() if path.startswith("events/")}


def problems(name: str, instance: object) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator(name).iter_errors(instance)]
