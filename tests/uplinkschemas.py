"""The JSON Schemas of docs/schemas/, loaded as a receiver would, for the tests that check real output against them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from referencing import Registry, Resource

from core.batchformat import ZERO_HASH, decode_body, parse_envelope
from core.types import Event
from gatewayd.uplink.batch import encode_batch
from store.records import BatchContent, SampleBlock, event_body, event_from_row

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


@cache
def event_kinds_with_schema() -> frozenset[str]:
    return frozenset(path.removeprefix("events/").removesuffix(".json") for path in documents()
                     if path.startswith("events/"))


def problems(name: str, instance: object) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator(name).iter_errors(instance)]


def batch_problems(bodies: Iterable[dict]) -> list[str]:
    """What is wrong with decoded batch bodies (e.g. a verifier's report of a real daemon's output)."""
    return [problem for body in bodies for problem in problems("batch-1.1.json", body)]


_KEY = Ed25519PrivateKey.generate()


def on_the_wire(events: Iterable[Event]) -> list[dict]:
    """`events` as a receiver decodes them: stored the way the store keeps them, read back, built into a
    signed batch by the daemon's encoder and decoded by the shared decoder (tuples become lists, numpy
    scalars plain numbers, NaN null)."""
    stored = [event_from_row(event.ts, event_body(event)) for event in events]
    if not stored:
        return []
    frame = encode_batch(BatchContent(SampleBlock.empty(), {}, stored), gateway_id="gw-schemas", boot_id=bytes(16),
                         seq=2, prev_hash=ZERO_HASH, created_ms=1, private_key=_KEY, epoch=bytes(range(16)))
    return decode_body(parse_envelope(frame))["events"]


def event_problems(events: Iterable[Event]) -> list[str]:
    """What is wrong with real `events` once on the wire: each must be of a kind with a schema under
    docs/schemas/events/ and pass it (as part of a batch body). An empty list when all is well."""
    found = []
    for event in on_the_wire(events):
        if event["kind"] not in event_kinds_with_schema():
            found.append(f"{event['kind']}: no schema in docs/schemas/events/")
        found += [f"{event['kind']} {problem}" for problem in problems("batch-1.1.json", {
            "tags": [], "samples": {"tag": [], "ts": [], "value": [], "quality": [], "source_ts": []},
            "events": [event]})]
    return found
