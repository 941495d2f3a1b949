"""The JSON Schema (draft 2020-12) of the configuration, generated from the validator's own `Field` tables.

`gatewayd schema` prints it so that an editor with the YAML language server completes keys, shows each
key's help and flags a wrong key or type while the file is written. Every key comes from the tables
check-config reads (the gateway's sections here, each driver kind's `DEVICE_FIELDS`/`TAG_FIELDS`,
the rules' tables), so a key added to a table shows in the schema with no second list to keep.
A field whose converter carries no schema (`core.schema.described`) is left open: check-config, not
the editor, has the last word on it, and on everything that spans keys (H above L, overlapping
registers, references between tags).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import drivers
from core.schema import Field, json_schema_of
from gatewayd.config import tables
from rules import config as rules_config
from rules.model import DEFAULT_PRIORITIES

DIALECT = "https://json-schema.org/draft/2020-12/schema"
NULL = {"type": "null"}


def config_schema() -> dict[str, Any]:
    """The whole configuration's schema: the top-level sections and, per driver kind, its devices' keys."""
    nested = {
        "gateway": table(tables.GATEWAY_FIELDS),
        "devices": {"type": "array", "items": device_schema()},
        "store": nullable(table(tables.STORE_FIELDS)),
        "history": nullable(table(tables.HISTORY_FIELDS)),
        "uplink": table(tables.UPLINK_FIELDS, {"tls": nullable(table(tables.TLS_FIELDS))}),
        "rules": nullable(table(rules_config.RULES_FIELDS, {
            "shelving": nullable(table(rules_config.SHELVING_FIELDS)),
            "analytics": nullable(table(rules_config.ANALYTICS_FIELDS)),
        })),
        "metrics": nullable(table(tables.METRICS_FIELDS)),
        "data_quality": nullable(table(tables.DATA_QUALITY_FIELDS)),
        "limits": nullable(table(tables.LIMITS_FIELDS)),
        "control": nullable(table(tables.CONTROL_FIELDS)),
        "console": nullable(table(tables.CONSOLE_FIELDS)),
    }
    return {"$schema": DIALECT, "title": "gatewayd configuration", **table(tables.TOP_FIELDS, nested)}


def device_schema() -> dict[str, Any]:
    """A device: `driver` names its kind, and the kind decides which keys the device and its tags take."""
    kinds = drivers.kinds()
    cases = [{"if": {"properties": {"driver": {"const": kind}}, "required": ["driver"]},
              "then": kind_schema(kind, module)} for kind in kinds if (module := loadable(kind)) is not None]
    return {"type": "object", "required": ["driver"],
            "properties": {"driver": {"enum": kinds, "description": tables.DEVICE_FIELDS["driver"].doc}},
            "allOf": cases}


def loadable(kind: str) -> Any:
    """The kind's schema module, or None for an installed plugin that cannot be imported (check-config
    names the package and the fault; the schema cannot say more than that the kind exists)."""
    try:
        return drivers.schema(kind)
    except drivers.plugins.PluginError:
        return None


def kind_schema(kind: str, driver: Any) -> dict[str, Any]:
    """The keys of a device of `kind`: the common ones, the driver's own, and its tags where the driver
    lists them (`tags`, or its `TAGS_KEY`, with the driver's `NESTED_FIELDS` when they are nested)."""
    tags_key = getattr(driver, "TAGS_KEY", "tags")
    common = {(tags_key if key == "tags" else key): field for key, field in tables.DEVICE_FIELDS.items()}
    tags = {"type": "array", "items": tag_schema(driver)}
    if tags_key != "tags":
        tags = nested_tags(driver, tags["items"])
    return table({**common, **driver.DEVICE_FIELDS}, {"driver": {"const": kind}, tags_key: tags})


def nested_tags(driver: Any, tag: dict[str, Any]) -> dict[str, Any]:
    """A driver whose tags sit under a table of their own (an RTU bus's slaves) names it `NESTED_FIELDS`;
    one whose entries are tags with the driver's keys (a gas panel's channels) has none."""
    fields = getattr(driver, "NESTED_FIELDS", None)
    if fields is None:
        return {"type": "array", "items": tag}
    return {"type": "array", "items": table(fields, {"tags": {"type": "array", "items": tag}})}


def tag_schema(driver: Any) -> dict[str, Any]:
    limit = {"anyOf": [{"type": "number"}, table(rules_config.limit_fields(tuple(DEFAULT_PRIORITIES)))]}
    alarms = table(rules_config.tag_alarm_fields(), {level: limit for level in ("hh", "h", "l", "ll")})
    return table({**tables.TAG_FIELDS, **driver.TAG_FIELDS}, {"alarms": nullable(alarms)})


def table(fields: dict[str, Field], nested: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A mapping with exactly the keys of `fields`: unknown keys and missing required keys are errors,
    as they are in `Reader.section`. `nested` gives the schema of keys whose field is a section."""
    nested = nested or {}
    properties = {key: property_schema(field, nested.get(key)) for key, field in fields.items()}
    required = [key for key, field in fields.items() if field.required]
    return {"type": "object", "properties": properties, "additionalProperties": False,
            **({"required": required} if required else {})}


def property_schema(field: Field, nested: dict[str, Any] | None) -> dict[str, Any]:
    schema = dict(nested if nested is not None else json_schema_of(field.convert) or {})
    if field.doc:
        schema["description"] = field.doc
    if not field.required and (default := json_value(field.default)) is not None:
        schema["default"] = default
    return schema


def json_value(value: Any) -> Any:
    """A default as JSON shows it, or None for one that has no JSON form (None itself, an infinity)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool, list)):
        return value
    return None


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A section that may be present but empty (`store:` with nothing under it): its defaults apply."""
    return {"anyOf": [schema, NULL]}


def open_fields(fields: dict[str, Field], nested: dict[str, Any]) -> list[str]:
    """The keys of a table the schema leaves open: no converter schema and no nested section."""
    return [key for key, field in fields.items() if json_schema_of(field.convert) is None and key not in nested]
