"""`gatewayd schema`: the JSON Schema editors use agrees with check-config, because both read the same tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import drivers
from core.schema import Field, integer
from gatewayd.config import load
from gatewayd.config.jsonschema import config_schema, open_fields
from gatewayd.config.reference import SECTIONS
from rules import config as rules_config

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "configs" / "bad"

# The golden broken configs a schema of single keys catches: a wrong type, an unknown key or kind, a missing
# key, a value out of range or not among the choices.
SCHEMA_LEVEL = {
    "control_approval_window_zero", "control_group_name_invalid", "data_quality_interval_zero",
    "devices_not_a_list", "history_keep_negative", "limits_request_depth_too_small", "missing_signing_key",
    "report_unknown_mode",
    "stale_after_not_a_duration", "tag_alarms_a_number", "tag_frozen_after_not_a_duration", "tag_max_rate_zero",
    "top_level_a_list", "unknown_driver", "unknown_key", "wrong_type",
}
# Those only check-config sees: they span keys or tags, read files, or need the rules' meaning.
SEMANTIC = {
    "alarm_limits_order": "H above HH compares two keys",
    "duplicate_tag": "a name unique across devices",
    "history_max_bytes_too_small": "a bound inside a converter the schema leaves open",
    "limits_per_account_above_total": "one key bounded by another",
    "metrics_listen_and_socket": "one of two keys",
    "opcua_without_security_policy": "security keys that depend on each other",
    "overlapping_registers": "addresses of two tags",
    "plain_with_tls_files": "transport against the tls section",
    "register_out_of_range": "address plus the type's width",
    "report_every_read_with_deadband": "a key forbidden by another key's value",
    "rules_bad_expression": "expression grammar",
    "rules_bypass_priority_level_not_declared": "priorities declared elsewhere in the file",
    "rules_flood_window_above_1h": "a bound inside a converter the schema leaves open",
    "rules_interlock_unknown_status_tag": "a reference to a tag",
    "rules_unknown_tag_in_expression": "a reference to a tag",
    "stale_after_device_shorter_than_keepalive": "a duration against the driver's refresh",
    "stale_after_shorter_than_poll": "a duration against the poll interval",
    "syntax_error": "not YAML at all: the YAML parser, not the schema, refuses it",
    **{f"rules_gas_{case}": "gas channel rules (GB/T 50493) across a tag and its channel" for case in (
        "combustible_tag_without_unit", "deadband_not_below_level1", "level1_above_25_lel",
        "level1_above_oel_in_mg", "level2_priority_below_level1", "oel_mg_without_molar_mass", "on_delay_10min",
        "setpoint_above_full_scale", "toxic_level1_above_100_oel")},
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_command_prints_the_schema_as_json():
    done = subprocess.run([sys.executable, "-m", "gatewayd", "schema"], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    printed = json.loads(done.stdout)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed == json.loads(json.dumps(config_schema()))


def test_config_example_validates(validator):
    document = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    assert [error.message for error in validator.iter_errors(document)] == []


def test_every_golden_broken_config_is_classified():
    names = {path.stem for path in BAD.glob("*.yaml")}
    assert not SCHEMA_LEVEL & SEMANTIC.keys()
    assert names == SCHEMA_LEVEL | SEMANTIC.keys()


@pytest.mark.parametrize("name", sorted(SCHEMA_LEVEL))
def test_schema_level_broken_config_fails_the_schema(validator, name):
    document = yaml.safe_load((BAD / f"{name}.yaml").read_text(encoding="utf-8"))
    assert list(validator.iter_errors(document)), name


@pytest.mark.parametrize("name", sorted(set(SEMANTIC) - {"syntax_error"}))
def test_semantic_broken_config_is_left_to_check_config(validator, name):
    """If the schema learns to catch one of these, move it to SCHEMA_LEVEL."""
    document = yaml.safe_load((BAD / f"{name}.yaml").read_text(encoding="utf-8"))
    assert [error.message for error in validator.iter_errors(document)] == [], SEMANTIC[name]


def test_syntax_error_is_not_yaml():
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load((BAD / "syntax_error.yaml").read_text(encoding="utf-8"))


def properties(schema: dict, *path: str) -> set[str]:
    """The keys the schema allows at `path` (a key, or `[]` for a list's items, or `kind=K` for a device)."""
    node = schema
    for step in path:
        node = next((option for option in node.get("anyOf", [node]) if option.get("type") != "null"), node)
        if step == "[]":
            node = node["items"]
        elif step.startswith("kind="):
            node = next(case["then"] for case in node["allOf"]
                        if case["if"]["properties"]["driver"]["const"] == step[5:])
        else:
            node = node["properties"][step]
    node = next((option for option in node.get("anyOf", [node]) if option.get("type") != "null"), node)
    return set(node["properties"])


GATEWAY_SECTIONS = {"gateway": (), "store": (), "uplink": (), "uplink.tls": (), "metrics": (), "data_quality": (),
                    "limits": (), "control": ()}


def test_the_schema_has_exactly_the_keys_of_every_table():
    schema = config_schema()
    assert properties(schema) == set(load.TOP_FIELDS)
    for title, fields in SECTIONS:
        if title in GATEWAY_SECTIONS:
            assert properties(schema, *title.split(".")) == set(fields), title
    assert properties(schema, "rules") == set(rules_config.RULES_FIELDS)
    assert properties(schema, "rules", "analytics") == set(rules_config.ANALYTICS_FIELDS)
    for kind in drivers.kinds():
        driver = drivers.schema(kind)
        tags_key = getattr(driver, "TAGS_KEY", "tags")
        common = {tags_key if key == "tags" else key for key in load.DEVICE_FIELDS}
        device = ("devices", "[]", f"kind={kind}")
        assert properties(schema, *device) == common | set(driver.DEVICE_FIELDS), kind
        tags = (*device, tags_key, "[]", *(("tags", "[]") if hasattr(driver, "NESTED_FIELDS") else ()))
        assert properties(schema, *tags) == set(load.TAG_FIELDS) | set(driver.TAG_FIELDS), kind
        assert properties(schema, *tags, "alarms") == set(rules_config.tag_alarm_fields()), kind


def test_a_key_added_to_a_table_shows_in_the_schema(monkeypatch):
    monkeypatch.setitem(load.TAG_FIELDS, "loop_number", Field(integer(1, 99), None, "control loop"))
    schema = config_schema()
    tag = properties(schema, "devices", "[]", "kind=modbus_tcp", "tags", "[]")
    assert "loop_number" in tag
    source = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(source)
    document["devices"][0]["tags"][0]["loop_number"] = 7
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []
    document["devices"][0]["tags"][0]["loop_number"] = 100
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document))


def test_open_fields_are_only_sections_and_converters_without_a_schema():
    """A field the schema leaves open is one whose converter cannot be described (a priority name the file
    declares, an expression); the gateway's own sections are all described."""
    for title, fields in SECTIONS:
        if title in GATEWAY_SECTIONS:
            assert open_fields(fields, {"tls": {}}) == [], title
