"""The `rules.gas` section: GB/T 50493-2019 gas detection channels, checked against the standard's limits,
the tag's unit and full scale, with the OEL converted from mg/m³ where it is given so.

    channels = gas_channels(node, "rules.gas", line, reader, tags, priorities, used_ids)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.schema import Field, Reader, boolean, duration, join, number, one_of, text
from rules.config_fields import ALARM_CLASSES, optional_of, positive_number, priority_of, ranked_priorities, tag_ref
from rules.gas import GAS_TYPES, OEL_KINDS, ON_DELAY_MAX, behaviour_problems, mg_per_m3_to_ppm, setpoint_problems
from rules.gas import OEL_UNITS as GAS_OEL_UNITS
from rules.gas import UNITS as GAS_UNITS
from rules.model import AlarmBehaviour, GasChannel


def _oel_unit(value: Any) -> str:
    spelled = value.replace("³", "3") if isinstance(value, str) else value
    return one_of(*GAS_OEL_UNITS)(spelled)


def gas_fields(tags: Mapping[str, Any], priorities: Mapping[str, int]) -> dict[str, Field]:
    ranked = ranked_priorities(priorities) or [""]
    return {
        "tag": Field(tag_ref(tags), doc="the concentration tag (unit %LEL or ppm)"),
        "type": Field(one_of(*GAS_TYPES), doc="combustible (%LEL) or toxic (ppm)"),
        "gas": Field(text, "", "e.g. methane, H2S"),
        "level1": Field(number(0.0), doc="level 1 (low) alarm setpoint"),
        "level2": Field(number(0.0), doc="level 2 (high) alarm setpoint"),
        "oel": Field(optional_of(positive_number), None, "toxic: occupational exposure limit, in oel_unit"),
        "oel_unit": Field(_oel_unit, "ppm", "ppm, or mg/m3 (converted to ppm at 25 °C with molar_mass)"),
        "oel_kind": Field(optional_of(one_of(*OEL_KINDS)), None, "which OEL it is: MAC, PC-STEL or PC-TWA (GBZ 2.1)"),
        "molar_mass": Field(optional_of(positive_number), None, "g/mol of the gas; needed for an OEL in mg/m3"),
        "idlh": Field(optional_of(positive_number), None, "toxic: immediately dangerous to life or health, ppm"),
        "range_limited": Field(boolean, False, "toxic: the detector range cannot reach 200 % OEL"),
        "deadband": Field(number(0.0), 0.0, "return only below the setpoint by this much; below level1"),
        "level1_priority": Field(priority_of(priorities), ranked[1] if len(ranked) > 1 else ranked[0],
                                 "priority of TAG.GAS1; default the second-highest declared"),
        "level2_priority": Field(priority_of(priorities), ranked[0],
                                 "priority of TAG.GAS2; default the highest declared; never below level 1"),
        "on_delay": Field(duration, 0.0, f"raise only when the level held this long; at most {ON_DELAY_MAX:g}s"),
        "off_delay": Field(duration, 0.0, "report the return only when clear this long"),
        "latching": Field(boolean, False, "stay in alarm until reset by an operator"),
        "realarm": Field(duration, 0.0, "acknowledged and still active this long: unacknowledged again"),
        "description": Field(text, "", "shown with the alarms' events"),
        "level1_class": Field(one_of(*ALARM_CLASSES), "standard", "class of TAG.GAS1"),
        "level2_class": Field(one_of(*ALARM_CLASSES), "highly_managed",
                              "class of TAG.GAS2: highly managed unless set to standard"),
    }


def _norm_unit(unit: str) -> str:
    return unit.replace(" ", "").lower()


def gas_channels(node: Any, path: str, line: int, reader: Reader, tags: Mapping[str, Any],
                  priorities: Mapping[str, int], used_ids: dict[str, int]) -> tuple[GasChannel, ...]:
    fields = gas_fields(tags, priorities)
    result, seen = [], {}
    for item, item_path, item_line in reader.items(node, path, line):
        values = reader.section(item, item_path, item_line, fields)
        if values is None or len(values) != len(fields):
            continue
        tag = values["tag"]
        if tag in seen:
            reader.error(Reader.key_line(item, "tag"), join(item_path, "tag"),
                         f"gas channel {tag} is already declared at line {seen[tag]}")
            continue
        seen[tag] = item_line
        oel = _check_gas_channel(values, item, item_path, item_line, reader, tags[tag], priorities)
        for level in (1, 2):
            alarm_id = f"{tag}.GAS{level}"
            if alarm_id in used_ids:
                reader.error(item_line, item_path, f"alarm id {alarm_id!r} is already used (line {used_ids[alarm_id]})")
            used_ids[alarm_id] = item_line
        common = dict(on_delay=values["on_delay"], off_delay=values["off_delay"], latching=values["latching"],
                      realarm=values["realarm"], description=values["description"])
        result.append(GasChannel(tag, values["type"], values["gas"], values["level1"], values["level2"], oel,
                                 values["idlh"], values["range_limited"], values["deadband"],
                                 AlarmBehaviour(priority=values["level1_priority"],
                                                highly_managed=values["level1_class"] == "highly_managed", **common),
                                 AlarmBehaviour(priority=values["level2_priority"],
                                                highly_managed=values["level2_class"] == "highly_managed", **common),
                                 item_line,
                                 oel_kind=values["oel_kind"] or "",
                                 oel_as_given=(values["oel"], values["oel_unit"]) if values["oel"] is not None
                                 else None, molar_mass=values["molar_mass"]))
    return tuple(result)


def _check_gas_channel(values: Mapping[str, Any], item: Any, item_path: str, item_line: int, reader: Reader,
                       info: Any, priorities: Mapping[str, int]) -> float | None:
    """Refuse what GB/T 50493 or plain safety forbids, warn on the unusual; returns the OEL in ppm."""
    tag, gas_type = values["tag"], values["type"]

    def refuse(key: str, message: str) -> None:
        reader.error(Reader.key_line(item, key) if key in item else item_line, join(item_path, key), message)

    def flag(key: str, message: str) -> None:
        reader.warn(Reader.key_line(item, key) if key in item else item_line, join(item_path, key), message)

    _check_gas_unit(tag, gas_type, getattr(info, "unit", "") or "", refuse, flag)
    if gas_type == "combustible":
        for key in ("oel", "idlh", "oel_kind", "molar_mass"):
            if values[key] is not None:
                refuse(key, f"{key} applies to toxic gas only")
        if values["range_limited"]:
            refuse("range_limited", "range_limited applies to toxic gas only")
    oel = _oel_ppm(values, refuse, flag) if gas_type == "toxic" else None
    unconverted = values["oel"] is not None and oel is None  # refused by _oel_ppm already
    for key, message in () if unconverted else setpoint_problems(gas_type, values["level1"], values["level2"],
                                                                  oel, values["idlh"], values["range_limited"]):
        refuse(key, message)
    high = getattr(info, "range_high", None)
    if gas_type == "toxic" and values["range_limited"] and oel is not None and high is not None and high >= 2 * oel:
        refuse("range_limited", f"tag {tag} ranges up to {high:g} ppm, which reaches 200 % OEL ({2 * oel:g} ppm): "
                                f"the IDLH fallback of GB/T 50493-2019 does not apply")
    for key in ("level1", "level2"):
        if high is not None and values[key] > high:
            refuse(key, f"{key.replace('level', 'level ')} at {values[key]:g} is above the full scale of "
                        f"tag {tag} ({high:g} {GAS_UNITS[gas_type]}, its range_high): it could never sound")
    refusals, warnings = behaviour_problems(values["level1"], values["deadband"], values["on_delay"])
    for key, message in refusals:
        refuse(key, message)
    for key, message in warnings:
        flag(key, message)
    if priorities.get(values["level2_priority"], 0) < priorities.get(values["level1_priority"], 0):
        refuse("level2_priority", f"level 2 priority {values['level2_priority']} is below the level 1 priority "
                                  f"{values['level1_priority']}: the more dangerous level must not be less urgent")
    return oel


def _check_gas_unit(tag: str, gas_type: str, unit: str, refuse: Callable[[str, str], None],
                    flag: Callable[[str, str], None]) -> None:
    """A channel compares against %LEL or ppm setpoints: a tag in another unit, or a combustible one with
    none at all (a 0-100 reading could be %LEL, %VOL or mA), would compare unlike with unlike."""
    wanted = GAS_UNITS[gas_type]
    if unit and _norm_unit(unit) != _norm_unit(wanted):
        refuse("type", f"a {gas_type} channel reads {wanted}, but tag {tag} has unit {unit!r}; "
                       f"convert the reading to {wanted}")
    elif not unit and gas_type == "combustible":
        refuse("tag", f"tag {tag} has no unit; a combustible channel reads %LEL: set unit: \"%LEL\" on the tag "
                      f"(after checking the detector reports %LEL, not %VOL or mA)")
    elif not unit:
        flag("tag", f"tag {tag} has no unit; a toxic channel reads ppm: set unit: ppm on the tag")


def _oel_ppm(values: Mapping[str, Any], refuse: Callable[[str, str], None],
             flag: Callable[[str, str], None]) -> float | None:
    """The OEL in ppm: as given, or converted from mg/m³ with the molar mass (ppm = mg/m³ × 24.45 / M)."""
    oel = values["oel"]
    if oel is None:
        return None
    if values["oel_kind"] is None:
        flag("oel_kind", "which OEL is this (MAC, PC-STEL or PC-TWA)? set oel_kind so the record says")
    if values["oel_unit"] == "ppm":
        return oel
    if values["molar_mass"] is None:
        refuse("molar_mass", f"an OEL of {oel:g} mg/m3 needs the gas's molar_mass (g/mol) to become ppm "
                             f"(H2S: 34.08)")
        return None
    return mg_per_m3_to_ppm(oel, values["molar_mass"])
