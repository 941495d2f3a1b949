"""Render the configuration reference tables from the schemas themselves, so docs cannot drift.

`python -m gatewayd.config.reference` prints the tables that docs/configuration.md embeds; a test
fails when the document and the schemas disagree.
"""

from __future__ import annotations

from pathlib import Path

import drivers
from gatewayd.config import tables
from core.schema import Field
from rules.config import reference_sections

SECTIONS = [
    ("gateway", tables.GATEWAY_FIELDS),
    ("devices[] (every driver)", tables.DEVICE_FIELDS),
    ("devices[].tags[] (every driver)", tables.TAG_FIELDS),
    ("store", tables.STORE_FIELDS),
    ("history", tables.HISTORY_FIELDS),
    ("uplink", tables.UPLINK_FIELDS),
    ("uplink.tls", tables.TLS_FIELDS),
    ("metrics", tables.METRICS_FIELDS),
    ("data_quality", tables.DATA_QUALITY_FIELDS),
    ("limits", tables.LIMITS_FIELDS),
    ("control", tables.CONTROL_FIELDS),
    ("console", tables.CONSOLE_FIELDS),
]


def default_text(field: Field) -> str:
    if field.required:
        return "**required**"
    if field.default is None:
        return "-"
    if isinstance(field.default, Path):
        return f"`{field.default}`"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    if isinstance(field.default, float) and field.default.is_integer():
        return f"`{int(field.default)}`"
    return f"`{field.default}`"


def table(title: str, fields: dict[str, Field]) -> str:
    rows = [f"### {title}", "", "| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{key}` | {default_text(field)} | {field.doc} |" for key, field in fields.items()]
    return "\n".join(rows)


def render() -> str:
    sections = list(SECTIONS)
    for kind in drivers.DRIVERS:
        schema = drivers.schema(kind)
        sections += [(f"devices[] with `driver: {kind}`", schema.DEVICE_FIELDS),
                     (f"devices[].tags[] with `driver: {kind}`", schema.TAG_FIELDS)]
    sections += reference_sections()
    return "\n\n".join(table(title, fields) for title, fields in sections) + "\n"


if __name__ == "__main__":
    print(render(), end="")
