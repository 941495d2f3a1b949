"""Config schema of the `tankbus` kind, the module the entry point names: cheap to import (no sockets),
so `gatewayd check-config` can validate a device without loading the protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.schema import Field, Reader, integer, number, text

DRIVER = "acme_tankbus.driver:TankbusDriver"  # the runtime class, imported when a device is built


@dataclass(frozen=True)
class TankbusSettings:
    host: str
    port: int
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True)
class TankChannel:
    channel: int


DEVICE_FIELDS = {
    "host": Field(text, doc="host name or address of the concentrator"),
    "port": Field(integer(1, 65535), 4196, "TCP port of the concentrator"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 30.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = {
    "channel": Field(integer(1, 99), doc="gauge channel of the concentrator, 1-99"),
}


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> TankbusSettings | None:
    if values["backoff_max"] < values["backoff_initial"]:
        reader.error(line, f"{path}.backoff_max", "backoff_max must be at least backoff_initial")
        return None
    return TankbusSettings(**values)


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> TankChannel:
    return TankChannel(values["channel"])


def check_tags(tags: list[tuple[str, str, int, TankChannel]], reader: Reader) -> None:
    """Two tags of one device must not read the same channel."""
    seen: dict[int, str] = {}
    for name, path, line, address in tags:
        if address.channel in seen:
            reader.error(line, f"{path}.channel", f"channel {address.channel} is already read by tag "
                         f"{seen[address.channel]}")
        else:
            seen[address.channel] = name
