"""docs/schemas/ is valid JSON Schema, each file where its $id says, and it says what the format says: the worked
example and the encoder's bodies pass; bodies the decoder refuses fail. Real gateway output is checked against it
in tests/test_uplink_epoch.py (the publisher's batches) and hil_tests/test_uplink_protocol.py (the daemon's)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from core.batchformat import decode_body, encode_heartbeat, parse_envelope
from tests.test_uplink_doc import documented_envelope, DOC
from tests.test_verify_protocol import E1, KEY_A, Gateway, rotation
from tests.uplinkschemas import BASE, documents, event_kinds_with_schema, problems


def test_every_schema_is_valid_and_named_by_its_path():
    for path, doc in documents().items():
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["$id"] == BASE + path
    assert {"chain_reset", "key_rotation", "gateway_started", "tag_metadata", "config_reloaded"} \
        <= event_kinds_with_schema()


def test_the_worked_example_and_a_1_1_stream_pass():
    assert problems("batch-1.1.json", decode_body(parse_envelope(documented_envelope(DOC.read_text())))) == []
    body_section = DOC.read_text().split("\n## Body\n", 1)[1]
    assert problems("batch-1.1.json", json.loads(body_section.split("```json\n", 1)[1].split("```", 1)[0])) == []
    gateway = Gateway(E1)
    frames = [gateway.batch(), gateway.batch([rotation(KEY_A)])]
    for frame in frames:
        assert problems("batch-1.1.json", decode_body(parse_envelope(frame))) == []
    beat = parse_envelope(encode_heartbeat(gateway_id="gw-1", epoch=E1, boot_id=bytes(16), head_seq=2,
                                           head_hash=bytes(32), created_ms=1, private_key=KEY_A, interval=60.0,
                                           oldest_unacknowledged=None))
    assert problems("heartbeat-1.1.json", decode_body(beat)) == []


@pytest.mark.parametrize("damage, where", [
    (lambda body: body["events"][0]["data"].update(reason="wiped"), "events/0/data/reason"),
    (lambda body: body["events"][0]["data"].pop("previous_seq"), "events/0/data"),
    (lambda body: body["events"][1]["data"].update(next_key_id="XYZ"), "events/1/data/next_key_id"),
    (lambda body: body["events"][1].update(priority=5), "events/1/priority"),
    (lambda body: body["samples"]["quality"].append(256), "samples/quality/1"),
    (lambda body: body.update(extra=1), ": Additional properties"),
])
def test_what_the_format_refuses_the_schema_refuses(damage, where):
    gateway = Gateway(E1)
    body = decode_body(parse_envelope(gateway.batch([rotation(KEY_A)])))
    broken = copy.deepcopy(body)
    damage(broken)
    found = problems("batch-1.1.json", broken)
    assert found and any(where in problem for problem in found), found
