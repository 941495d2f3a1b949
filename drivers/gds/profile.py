"""GDS profiles: a controller or detector family's register map, as data.

A profile says where each channel's registers are (`first_address + (channel - 1) * stride`, then
each field at its offset, typed and scaled like a Modbus tag) and what the bits mean: which
condition raises alarm level 1, 2 or 3, which marks a fault (and which field holds the fault code),
which puts the channel in inhibit, calibration or bump-test mode, where the panel's heartbeat
counter is, where a detector reports the unit of its concentration (`unit`: the one set bit among
`bits` of a flag field names it) and which fields hold its alarm thresholds (`thresholds`). A
condition is one of

    {field: status, bit: 4}                        bit 4 set
    {field: status, mask: 0x0030}                  any of the masked bits set
    {field: status, mask: 0x000F, equals: [7, 8]}  the masked value is one of these

Shipped profiles live beside this module (`profiles/NAME.yaml`); an integrator adds one with
`profile_file:`. A profile is checked like the config itself: every error names the profile's
file, line and key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.config import ADDRESS_SPACE, MAX_READ_REGISTERS, REGISTER_TABLES, ModbusAddress
from core.schema import (
    ConfigIssue, Field, Invalid, Reader, identifier, integer, is_mapping, join, number, one_of, text,
)
from core.yamlload import load_yaml, read_source

PROFILE_DIR = Path(__file__).parent / "profiles"
MODES = ("inhibit", "calibration", "bump_test")
ALARM_LEVELS = (1, 2, 3)
FIELD_TYPES = ("int16", "uint16", "int32", "uint32", "float32")
FLAG_TYPES = ("int16", "uint16")
GAS_UNITS = ("%LEL", "ppm", "ppb", "%VOL", "mA")


@dataclass(frozen=True)
class Condition:
    """True when a flag field's bit is set, or its masked value is non-zero or one of `equals`."""

    field: str
    mask: int
    equals: tuple[int, ...] = ()

    def holds(self, raw: int) -> bool:
        masked = raw & self.mask
        return masked in self.equals if self.equals else masked != 0


@dataclass(frozen=True)
class UnitCode:
    """Where a detector says which unit its concentration is in: the one bit of `bits` set in a flag field.

        UnitCode("units", {8: "ppm", 9: "ppb"}).decode(0x0101)   # "ppm" (bit 8; bits 0-2 are not looked at)
    """

    field: str
    bits: dict[int, str]  # bit number -> unit

    def decode(self, raw: int) -> str | None:
        """The unit whose bit alone is set; None when none or several of `bits` are set."""
        found = [unit for bit, unit in self.bits.items() if raw >> bit & 1]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class ProfileField:
    offset: int
    dtype: str
    scale: float = 1.0
    offset_value: float = 0.0
    word_order: str = "big"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    table: str
    channels: int
    first_address: int
    stride: int
    fields: dict[str, ProfileField]
    concentration: str
    alarms: dict[int, Condition]
    fault: Condition | None
    fault_code: str | None
    modes: dict[str, Condition]
    heartbeat: ModbusAddress | None
    max_block: int = MAX_READ_REGISTERS
    serial: dict[str, Any] | None = None
    source: str = ""
    unit: UnitCode | None = None
    thresholds: dict[int, str] = field(default_factory=dict)  # alarm level -> field of its threshold

    def address(self, channel: int, field_name: str) -> ModbusAddress:
        """The Modbus address of one field of one channel (1-based)."""
        spec = self.fields[field_name]
        return ModbusAddress(self.table, self.first_address + (channel - 1) * self.stride + spec.offset, spec.dtype,
                             word_order=spec.word_order, scale=spec.scale, offset=spec.offset_value)


def shipped_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def _condition(value: Any) -> dict[str, Any]:
    if not is_mapping(value):
        raise Invalid("expected a condition such as {field: status, bit: 3} or {field: status, mask: 0x30}")
    return value


FIELD_FIELDS = {
    "offset": Field(integer(0, 255), doc="registers from the start of the channel's block"),
    "type": Field(one_of(*FIELD_TYPES), "uint16", ", ".join(FIELD_TYPES)),
    "scale": Field(number(), 1.0, "engineering value = raw * scale + offset_value"),
    "offset_value": Field(number(), 0.0, "engineering value = raw * scale + offset_value"),
    "word_order": Field(one_of("big", "little"), "big", "register order of 32-bit values"),
}
CONDITION_FIELDS = {
    "field": Field(identifier, doc="a field of `fields` of type int16 or uint16"),
    "bit": Field(integer(0, 15), None, "the condition holds while this bit is set"),
    "mask": Field(integer(1, 0xFFFF), None, "the condition holds while any masked bit is set, or with "
                  "`equals` while the masked value is one of those"),
    "equals": Field(lambda value: value, None, "list of masked values for which the condition holds"),
}
HEARTBEAT_FIELDS = {
    "address": Field(integer(0, ADDRESS_SPACE - 1), doc="absolute address of the heartbeat counter"),
    "type": Field(one_of("uint16", "uint32"), "uint16", "uint16 or uint32"),
}
UNIT_FIELDS = {
    "field": Field(identifier, doc="an int16 or uint16 field of `fields`"),
    "bits": Field(lambda value: value, doc=f"bit number -> unit ({', '.join(GAS_UNITS)}): the unit whose bit "
                  "alone is set"),
}
SERIAL_FIELDS = {
    "baud": Field(integer(1200, 115200), 9600, "default baud rate over RTU"),
    "parity": Field(one_of("N", "E", "O"), "N", "default parity over RTU"),
    "stop_bits": Field(integer(1, 2), 1, "default stop bits over RTU"),
}
PROFILE_FIELDS = {
    "name": Field(identifier, doc="profile name"),
    "description": Field(text, "", "what the profile is for"),
    "table": Field(one_of(*REGISTER_TABLES), "holding", "holding or input"),
    "channels": Field(integer(1, 256), doc="number of channels of the controller"),
    "first_address": Field(integer(0, ADDRESS_SPACE - 1), doc="first register of channel 1"),
    "stride": Field(integer(1, 1000), doc="registers from one channel's block to the next"),
    "max_block": Field(integer(1, MAX_READ_REGISTERS), MAX_READ_REGISTERS, "largest read the controller accepts"),
    "serial": Field(lambda value: value, None, "baud, parity, stop_bits defaults for transport rtu"),
    "fields": Field(lambda value: value, doc="per-channel fields: offset, type, scale"),
    "concentration": Field(identifier, "concentration", "the field holding the concentration"),
    "alarms": Field(lambda value: value, doc="alarm level (1, 2, 3) -> condition"),
    "fault": Field(_condition, None, "condition of a channel fault"),
    "fault_code": Field(identifier, None, "field holding the fault code (0: no fault)"),
    "modes": Field(lambda value: value, None, "inhibit, calibration, bump_test -> condition"),
    "heartbeat": Field(lambda value: value, None, "panel-wide counter that must keep changing"),
    "unit": Field(lambda value: value, None, "where the detector reports its concentration unit: "
                  "{field: F, bits: {BIT: UNIT, ...}}"),
    "thresholds": Field(lambda value: value, None, "alarm level (1, 2, 3) -> the field holding its threshold"),
}


def profile_source(name: str | None, file: Path | None) -> Path:
    return file if file is not None else PROFILE_DIR / f"{name}.yaml"


def load_profile(path: Path) -> tuple[Profile | None, tuple[ConfigIssue, ...]]:
    """Read and check a profile file; (profile, ()) or (None, issues naming the profile's lines).

    The file is read through `read_source`, so the config it belongs to is keyed on its digest."""
    try:
        text_source = read_source(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, (ConfigIssue(str(path), 0, "", f"cannot read the profile: {exc}"),)
    return _parse_profile(path, text_source)


@functools.lru_cache(maxsize=32)
def _parse_profile(path: Path, text_source: str) -> tuple[Profile | None, tuple[ConfigIssue, ...]]:
    """Keyed by the text too: panels sharing a profile parse it once, an edited profile is parsed again."""
    reader = Reader(str(path))
    try:
        document = load_yaml(text_source, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, (ConfigIssue(str(path), mark.line + 1 if mark else 0, "", f"YAML syntax: {exc}"),)
    profile = _build(document, reader, str(path))
    return (profile if reader.ok else None), tuple(reader.issues)


def _build(document: Any, reader: Reader, source: str) -> Profile | None:
    values = reader.section(document, "", 1, PROFILE_FIELDS)
    if values is None or len(values) != len(PROFILE_FIELDS):
        return None
    line = functools.partial(Reader.key_line, document)
    fields: dict[str, ProfileField] = {}
    for name, node in (values["fields"] or {}).items() if is_mapping(values["fields"]) else ():
        spec = reader.section(node, join("fields", name), line("fields"), FIELD_FIELDS)
        if spec is not None and len(spec) == len(FIELD_FIELDS):
            fields[name] = ProfileField(spec["offset"], spec["type"], spec["scale"], spec["offset_value"],
                                        spec["word_order"])
    if not is_mapping(values["fields"]) or not fields:
        reader.error(line("fields"), "fields", "expected a mapping of field names to {offset, type}")
        return None
    for name, spec in fields.items():
        width = 1 if spec.dtype in FLAG_TYPES else 2
        if spec.offset + width > values["stride"]:
            reader.error(line("fields"), join("fields", name),
                         f"offset {spec.offset} ({spec.dtype}) runs past the channel's stride of {values['stride']}")
    end = values["first_address"] + values["channels"] * values["stride"]
    if end > ADDRESS_SPACE:
        reader.error(line("channels"), "channels", f"{values['channels']} channels of {values['stride']} registers "
                     f"from {values['first_address']} run past address {ADDRESS_SPACE - 1}")
    if values["concentration"] not in fields:
        reader.error(line("concentration"), "concentration", f"no field {values['concentration']!r} in fields")

    def condition(node: Any, path: str, at: int) -> Condition | None:
        spec = reader.section(node, path, at, CONDITION_FIELDS)
        if spec is None or len(spec) != len(CONDITION_FIELDS):
            return None
        field, bit, mask, equals = spec["field"], spec["bit"], spec["mask"], spec["equals"]
        if field not in fields or fields[field].dtype not in FLAG_TYPES:
            reader.error(at, join(path, "field"), f"{field!r} is not an int16 or uint16 field of `fields`")
            return None
        if (bit is None) == (mask is None):
            reader.error(at, path, "give either bit or mask")
            return None
        if equals is not None and (mask is None or not isinstance(equals, list)
                                   or not all(isinstance(item, int) and not isinstance(item, bool) for item in equals)):
            reader.error(at, join(path, "equals"), "equals is a list of whole numbers, used with mask")
            return None
        return Condition(field, 1 << bit if bit is not None else mask, tuple(equals or ()))

    alarms: dict[int, Condition] = {}
    for level, node in (values["alarms"].items() if is_mapping(values["alarms"]) else ()):
        if level not in ALARM_LEVELS:
            reader.error(Reader.key_line(values["alarms"], level), join("alarms", level),
                         "alarm levels are 1, 2 and 3")
            continue
        found = condition(node, join("alarms", level), Reader.key_line(values["alarms"], level))
        if found is not None:
            alarms[level] = found
    if not alarms:
        reader.error(line("alarms"), "alarms", "expected at least the condition of alarm level 1, e.g. "
                     "{1: {field: status, bit: 0}}")
    fault = condition(values["fault"], "fault", line("fault")) if values["fault"] is not None else None
    if values["fault_code"] is not None and values["fault_code"] not in fields:
        reader.error(line("fault_code"), "fault_code", f"no field {values['fault_code']!r} in fields")
    modes: dict[str, Condition] = {}
    if values["modes"] is not None:
        if not is_mapping(values["modes"]):
            reader.error(line("modes"), "modes", f"expected a mapping of {', '.join(MODES)} to conditions")
        else:
            for mode, node in values["modes"].items():
                if mode not in MODES:
                    reader.error(Reader.key_line(values["modes"], mode), join("modes", mode),
                                 f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
                    continue
                found = condition(node, join("modes", mode), Reader.key_line(values["modes"], mode))
                if found is not None:
                    modes[mode] = found
    heartbeat = None
    if values["heartbeat"] is not None:
        spec = reader.section(values["heartbeat"], "heartbeat", line("heartbeat"), HEARTBEAT_FIELDS)
        if spec is not None and len(spec) == len(HEARTBEAT_FIELDS):
            heartbeat = ModbusAddress(values["table"], spec["address"], spec["type"])
    serial = None
    if values["serial"] is not None:
        serial = reader.section(values["serial"], "serial", line("serial"), SERIAL_FIELDS)
    unit = _unit_code(values["unit"], fields, reader, line("unit")) if values["unit"] is not None else None
    thresholds = _thresholds(values["thresholds"], fields, reader, line("thresholds"))
    if not reader.ok:
        return None
    return Profile(values["name"], values["description"], values["table"], values["channels"],
                   values["first_address"], values["stride"], fields, values["concentration"], alarms, fault,
                   values["fault_code"], modes, heartbeat, values["max_block"], serial, source, unit, thresholds)


def _unit_code(node: Any, fields: dict[str, ProfileField], reader: Reader, at: int) -> UnitCode | None:
    spec = reader.section(node, "unit", at, UNIT_FIELDS)
    if spec is None or len(spec) != len(UNIT_FIELDS):
        return None
    if spec["field"] not in fields or fields[spec["field"]].dtype not in FLAG_TYPES:
        reader.error(at, "unit.field", f"{spec['field']!r} is not an int16 or uint16 field of `fields`")
        return None
    bits = spec["bits"]
    valid = is_mapping(bits) and bits and all(
        isinstance(bit, int) and not isinstance(bit, bool) and 0 <= bit <= 15 and unit in GAS_UNITS
        for bit, unit in bits.items())
    if not valid:
        reader.error(at, "unit.bits", f"expected a mapping of bit numbers 0-15 to units ({', '.join(GAS_UNITS)}), "
                     "e.g. {8: ppm, 11: \"%LEL\"}")
        return None
    return UnitCode(spec["field"], dict(bits))


def _thresholds(node: Any, fields: dict[str, ProfileField], reader: Reader, at: int) -> dict[int, str]:
    if node is None:
        return {}
    if not is_mapping(node) or not all(level in ALARM_LEVELS and name in fields for level, name in node.items()):
        reader.error(at, "thresholds", "expected a mapping of alarm levels (1, 2, 3) to fields of `fields`, "
                     "e.g. {1: alarm1_threshold}")
        return {}
    return dict(node)

