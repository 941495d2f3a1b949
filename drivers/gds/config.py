"""Configuration schema of a gas-detection panel (`driver: gds`): transport, profile, channels.

    - name: gds-north
      driver: gds
      transport: tcp               # or rtu, with serial_port (and baud, parity, stop_bits)
      host: 10.20.0.40
      profile: generic             # a shipped profile, or profile_file: my-panel.yaml
      channels:
        - {channel: 1, name: GT101, gas: methane, unit: "%LEL", range: [0, 100]}
        - {channel: 2, name: GT102, gas: H2S, unit: ppm, range: [0, 100]}

Each channel entry is a tag (all the usual tag keys) for the concentration, plus `channel` and
`gas`; it must give its `unit`. The driver adds two tags per channel: `NAME.alarm`, the panel's
alarm level (0 none, 1-3), and `NAME.fault`, its fault code (0 none; 1 where the profile has a
fault bit but no code); and, where the profile reads the detector's alarm thresholds,
`NAME.threshold1` (2, 3), in the channel's unit. Channel numbers are unique per panel and within the profile's channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.gds.profile import GAS_UNITS, Profile, load_profile, profile_source, shipped_profiles
from drivers.modbus.rtu_config import STANDARD_BAUDS, SerialSettings, baud_rate, whole_number_of
from core.schema import positive_duration, optional
from core.schema import Field, Reader, identifier, integer, join, number, one_of, text
from core.yamlload import LineDict

TAGS_KEY = "channels"
SUFFIXES = {"alarm": ".alarm", "fault": ".fault"}
DESCRIPTIONS = {"alarm": "alarm level 0-3 reported by the panel", "fault": "fault code reported by the panel, 0 none"}


@dataclass(frozen=True)
class GdsSettings:
    transport: str
    profile: Profile
    heartbeat_timeout: float
    unit_id: int
    host: str | None = None
    port: int = 502
    serial: SerialSettings | None = None
    max_gap: int = 10
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


@dataclass(frozen=True)
class GdsPoint:
    """What a tag of a panel shows: a channel's concentration, alarm level or fault code."""

    channel: int
    role: str
    gas: str = ""


DEVICE_FIELDS = {
    "transport": Field(one_of("tcp", "rtu"), doc="tcp (Modbus TCP) or rtu (Modbus RTU on a serial port)"),
    "profile": Field(optional(identifier), None, f"a shipped profile: {', '.join(shipped_profiles())}"),
    "profile_file": Field(optional(lambda value: Path(text(value))), None,
                          "a profile of your own (YAML, see docs/drivers.md), relative to the config file"),
    "host": Field(optional(text), None, "tcp: address of the panel or detector"),
    "port": Field(integer(1, 65535), 502, "tcp: TCP port"),
    "unit_id": Field(integer(0, 247), 1, "Modbus unit id of the panel"),
    "serial_port": Field(optional(text), None, "rtu: serial device, e.g. /dev/ttyUSB1"),
    "baud": Field(optional(baud_rate), None, f"rtu: one of {', '.join(map(str, STANDARD_BAUDS))}; "
                  "default the profile's, else 9600"),
    "parity": Field(optional(one_of("N", "E", "O")), None, "rtu: N, E or O; default the profile's, else N"),
    "stop_bits": Field(optional(whole_number_of(1, 2)), None, "rtu: 1 or 2; default the profile's, else 1"),
    "heartbeat_timeout": Field(positive_duration, 10.0,
                               "duration: a heartbeat unchanged this long marks the whole panel DEVICE_ERROR"),
    "max_gap": Field(integer(0, 125), 10, "unused registers a block read may span to save a request"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 60.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = {
    "channel": Field(integer(1, 256), doc="channel (detector) number on the panel, from 1"),
    "gas": Field(optional(text), "", "the gas the channel detects, e.g. methane, H2S"),
}


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> GdsSettings | None:
    problems = []
    if (values["profile"] is None) == (values["profile_file"] is None):
        problems.append(("profile", f"give one of profile ({', '.join(shipped_profiles())}) or profile_file"))
    elif values["profile"] is not None and values["profile"] not in shipped_profiles():
        problems.append(("profile", f"no shipped profile {values['profile']!r}; shipped: "
                                    f"{', '.join(shipped_profiles())}, or write one and give profile_file"))
    tcp_keys, rtu_keys = ("host",), ("serial_port", "baud", "parity", "stop_bits")
    if values["transport"] == "tcp":
        if values["host"] is None:
            problems.append(("host", "transport tcp needs host"))
        problems += [(key, f"{key} is for transport rtu") for key in rtu_keys if values[key] is not None]
    else:
        if values["serial_port"] is None:
            problems.append(("serial_port", "transport rtu needs serial_port"))
        problems += [(key, f"{key} is for transport tcp") for key in tcp_keys if values[key] is not None]
    if values["backoff_max"] < values["backoff_initial"]:
        problems.append(("backoff_max", "backoff_max must be at least backoff_initial"))
    for key, message in problems:
        reader.error(line, join(path, key), message)
    if problems:
        return None
    file = values["profile_file"]
    if file is not None and not file.is_absolute():
        file = Path(reader.file).resolve().parent / file
    profile, issues = load_profile(profile_source(values["profile"], file))
    reader.issues.extend(issues)
    if profile is None:
        if not issues:
            reader.error(line, join(path, "profile"), "the profile is invalid")
        return None
    serial = None
    if values["transport"] == "rtu":
        defaults = {"baud": 9600, "parity": "N", "stop_bits": 1, **(profile.serial or {})}
        chosen = {key: defaults[key] if values[key] is None else values[key] for key in ("baud", "parity", "stop_bits")}
        serial = SerialSettings(values["serial_port"], max_gap=values["max_gap"], max_block=profile.max_block,
                                backoff_initial=values["backoff_initial"], backoff_max=values["backoff_max"], **chosen)
    return GdsSettings(values["transport"], profile, values["heartbeat_timeout"], values["unit_id"], values["host"],
                       values["port"], serial, values["max_gap"], values["backoff_initial"], values["backoff_max"])


def tag_items(node: dict, path: str, reader: Reader, settings: GdsSettings | None) -> list[tuple[Any, str, int, dict]]:
    """Each channel entry as its concentration tag, followed by its generated alarm and fault tags."""
    items = []
    seen: dict[int, int] = {}
    channels_path = join(path, TAGS_KEY)
    for entry, entry_path, entry_line in reader.items(node.get(TAGS_KEY), channels_path,
                                                      Reader.key_line(node, TAGS_KEY)):
        items.append((entry, entry_path, entry_line, {"role": "concentration"}))
        if not isinstance(entry, dict):
            continue
        channel, unit, name = entry.get("channel"), entry.get("unit"), entry.get("name")
        if isinstance(channel, int) and not isinstance(channel, bool):
            if channel in seen:
                reader.error(Reader.key_line(entry, "channel"), join(entry_path, "channel"),
                             f"channel {channel} is already read by the entry at line {seen[channel]}")
            seen[channel] = entry_line
            if settings is not None and channel > settings.profile.channels:
                reader.error(Reader.key_line(entry, "channel"), join(entry_path, "channel"),
                             f"profile {settings.profile.name} has channels 1..{settings.profile.channels}")
        if unit not in GAS_UNITS:
            reader.error(Reader.key_line(entry, "unit"), join(entry_path, "unit"),
                         f"a gas channel needs its unit, one of {', '.join(GAS_UNITS)}; got {unit!r}")
        if not isinstance(name, str) or not isinstance(channel, int):
            continue  # the entry's own errors are reported with its keys
        for role, suffix in SUFFIXES.items():
            items.append((_generated(entry, entry_line, name + suffix, DESCRIPTIONS[role], channel), entry_path,
                          entry_line, {"role": role}))
        for level in sorted(settings.profile.thresholds) if settings is not None else ():
            node = _generated(entry, entry_line, f"{name}.threshold{level}",
                              f"alarm {level} threshold set in the detector", channel,
                              **({"unit": unit} if unit in GAS_UNITS else {}))
            items.append((node, entry_path, entry_line, {"role": threshold_role(level)}))
    return items


# keys of a channel entry that its generated tags share with its concentration tag
INHERITED_KEYS = ("equipment_code", "hazard_source_code", "production_unit", "stale_after", "report")


def threshold_role(level: int) -> str:
    return f"threshold{level}"


def _generated(entry: dict, line: int, name: str, what: str, channel: int, **more: Any) -> LineDict:
    """The node of a tag the driver adds for a channel, carrying the entry's line for any error."""
    node = LineDict({"name": name, "channel": channel,
                     "description": f"{entry.get('description') or entry.get('name')}: {what}", **more,
                     **{key: entry[key] for key in INHERITED_KEYS if key in entry}})
    node.line, node.key_lines = line, dict.fromkeys(node, line)
    return node


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> GdsPoint:
    return GdsPoint(values["channel"], values["role"], values["gas"] or "")


def check_tags(tags: list[tuple[str, str, int, GdsPoint]], reader: Reader) -> None:
    """Nothing to add: channel numbers are checked with the channel entries (`tag_items`)."""
