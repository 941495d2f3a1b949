"""The simulated plant's register map, as the tag list an integrator would write in config.yaml.

One source of truth for both sides of a test: the simulator (`plc.py`) serves exactly these registers,
and tests and benchmarks put the same dicts under a `modbus_tcp` device's `tags:`.

Layout:
- holding 0..10 and coil 0: storage tank T-101 with its level, temperature and pressure (float32,
  with alarm limits), flows and a gas detector (int16 scaled), a status word whose bits are the inlet
  valve and the high-high level switch, and the feed pump's running coil;
- holding MARKER_ADDRESS: a uint16 the process model never writes. A benchmark writes a counter there
  and times how long the value takes to come out of the gateway;
- input 0..: generic process values in equipment slots of SLOT_REGISTERS registers, each slot holding
  seven float32 and three int16 values and SLOT_REGISTERS - 17 unused registers (a realistic map with
  holes, so the planner's gap budget matters).
"""

from __future__ import annotations

from typing import Any

from drivers.modbus.config import ADDRESS_SPACE

MARKER_ADDRESS = 16  # close enough to the tank tags that the default gap budget reads it with them
GENERIC_TABLE = "input"
SLOT_REGISTERS = 20
PRODUCTION_UNIT = "tank-farm-1"
HAZARD_SOURCE = "HS-T101"

# name, description, unit, (low, high), table, address, type, extra keys, alarms
_TANK: list[tuple[str, str, str, tuple[float, float], str, int, str, dict[str, Any], dict[str, Any] | None]] = [
    ("LT101", "T-101 level", "m", (0.0, 10.0), "holding", 0, "float32", {},
     {"hh": 9.0, "h": 8.5, "l": 1.5, "ll": 1.0, "deadband": 0.1, "priority": "high"}),
    ("TT101", "T-101 temperature", "°C", (0.0, 150.0), "holding", 2, "float32", {},
     {"hh": 120.0, "h": 100.0, "l": 5.0, "deadband": 2.0, "priority": "high"}),
    ("PT101", "T-101 pressure", "MPa", (0.0, 2.5), "holding", 4, "float32", {},
     {"hh": 1.8, "h": 1.5, "deadband": 0.05, "priority": "critical"}),
    ("FT101", "T-101 inflow", "m³/h", (0.0, 60.0), "holding", 6, "int16", {"scale": 0.1}, None),
    ("FT102", "T-101 outflow", "m³/h", (0.0, 60.0), "holding", 7, "int16", {"scale": 0.1}, None),
    ("AT101", "T-101 dike combustible gas", "%LEL", (0.0, 100.0), "holding", 8, "int16", {"scale": 0.1},
     {"hh": 40.0, "h": 20.0, "deadband": 1.0, "priority": "critical"}),
    ("XV101", "T-101 inlet valve open", "", (0.0, 1.0), "holding", 10, "bit", {"bit": 0}, None),
    ("LSHH101", "T-101 high-high level switch", "", (0.0, 1.0), "holding", 10, "bit", {"bit": 1}, None),
    ("P101", "T-101 feed pump running", "", (0.0, 1.0), "coil", 0, "bool", {}, None),
]

# prefix, description, unit, (low, high), type, scale, offset in slot: seven float32, three int16
_SLOT: list[tuple[str, str, str, tuple[float, float], str, float, int]] = [
    ("TT", "temperature", "°C", (0.0, 200.0), "float32", 1.0, 0),
    ("PT", "pressure", "MPa", (0.0, 4.0), "float32", 1.0, 2),
    ("LT", "level", "%", (0.0, 100.0), "float32", 1.0, 4),
    ("FT", "flow", "m³/h", (0.0, 100.0), "float32", 1.0, 6),
    ("TT", "temperature", "°C", (0.0, 200.0), "float32", 1.0, 8),
    ("PT", "pressure", "MPa", (0.0, 4.0), "float32", 1.0, 10),
    ("AT", "combustible gas", "%LEL", (0.0, 100.0), "float32", 1.0, 12),
    ("TT", "temperature", "°C", (0.0, 200.0), "int16", 0.1, 14),
    ("PT", "pressure", "MPa", (0.0, 4.0), "int16", 0.001, 15),
    ("FT", "flow", "m³/h", (0.0, 100.0), "int16", 0.1, 16),
]

TANK_TAGS = len(_TANK)
TAGS_PER_SLOT = len(_SLOT)
MAX_TAGS = TANK_TAGS + (ADDRESS_SPACE // SLOT_REGISTERS) * TAGS_PER_SLOT


def plant_tags(n: int, marker: bool = False) -> list[dict[str, Any]]:
    """The first n tags of the plant (tank T-101 first), plus the MARKER tag when `marker` is set.

    Every dict is valid as a `modbus_tcp` tag in config.yaml. Raises ValueError beyond MAX_TAGS.
    """
    if not 0 <= n <= MAX_TAGS:
        raise ValueError(f"the simulated plant has room for 0..{MAX_TAGS} tags, not {n}")
    tags = [_tank_tag(*row) for row in _TANK[:n]]
    tags.extend(_generic_tag(index) for index in range(max(0, n - TANK_TAGS)))
    if marker:
        tags.append(marker_tag())
    return tags


def marker_tag() -> dict[str, Any]:
    return {
        "name": "MARKER", "description": "latency marker written by benchmarks", "unit": "",
        "range": [0, 65535], "table": "holding", "address": MARKER_ADDRESS, "type": "uint16",
        "target_code": "MARKER", "equipment_code": "SIM", "hazard_source_code": "",
        "production_unit": PRODUCTION_UNIT, "deadband": 0.0, "max_interval": 60.0,
    }


def _tank_tag(name: str, description: str, unit: str, span: tuple[float, float], table: str, address: int,
              dtype: str, extra: dict[str, Any], alarms: dict[str, Any] | None) -> dict[str, Any]:
    tag = {
        "name": name, "description": description, "unit": unit, "range": list(span),
        "table": table, "address": address, "type": dtype, **extra,
        "target_code": f"T101_{name}", "equipment_code": "T-101", "hazard_source_code": HAZARD_SOURCE,
        "production_unit": PRODUCTION_UNIT, "deadband": _deadband(span, dtype), "max_interval": 60.0,
    }
    if alarms:
        tag["alarms"] = dict(alarms)
    return tag


def _generic_tag(index: int) -> dict[str, Any]:
    slot, position = divmod(index, TAGS_PER_SLOT)
    prefix, what, unit, span, dtype, scale, offset = _SLOT[position]
    name = f"{prefix}{1000 + index}"
    tag = {
        "name": name, "description": f"unit {slot} {what}", "unit": unit, "range": list(span),
        "table": GENERIC_TABLE, "address": slot * SLOT_REGISTERS + offset, "type": dtype,
        "target_code": f"U{slot:04d}_{name}", "equipment_code": f"E-{slot:04d}", "hazard_source_code": "",
        "production_unit": f"unit-{slot // 100}", "deadband": _deadband(span, dtype), "max_interval": 60.0,
    }
    if dtype == "int16":
        tag["scale"] = scale
    return tag


def _deadband(span: tuple[float, float], dtype: str) -> float:
    """Half a percent of span for analog values; switches report every change."""
    return 0.0 if dtype in ("bit", "bool") else round((span[1] - span[0]) * 0.005, 6)
