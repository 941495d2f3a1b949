"""Configuration schema of the OPC DA gateway driver: where the gateway is, which DA server, which items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.schema import Field, Reader, integer, number, one_of, text

SOURCES = ("hybrid", "cache", "device")


@dataclass(frozen=True)
class OpcDaItem:
    """One OPC DA item id, as the DA server names it (e.g. `Random.Real8`, `PLC1.TT101.PV`)."""

    item: str


@dataclass(frozen=True)
class OpcDaSettings:
    host: str
    server: str
    port: int = 7766
    object_id: str = "OpcDaClient"
    opc_host: str = "localhost"
    group: str | None = None
    source: str = "hybrid"
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


DEVICE_FIELDS = {
    "host": Field(text, doc="host name or address of the OpenOPC gateway service"),
    "port": Field(integer(1, 65535), 7766, "TCP port of the gateway service"),
    "object_id": Field(text, "OpcDaClient", "Pyro5 object id of the gateway's DA client"),
    "server": Field(text, doc="ProgID of the OPC DA server behind the gateway, e.g. Matrikon.OPC.Simulation"),
    "opc_host": Field(text, "localhost", "machine of the DA server, as the gateway sees it"),
    "group": Field(text, None, "name of the DA group the gateway keeps for this device; default gatewayd.DEVICE"),
    "source": Field(one_of(*SOURCES), "hybrid", "hybrid (device first, then cache), cache or device reads"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 60.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = {
    "item": Field(text, doc="OPC DA item id, e.g. Channel1.Device1.TT101"),
}


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> OpcDaSettings | None:
    if values["backoff_max"] < values["backoff_initial"]:
        reader.error(line, f"{path}.backoff_max", "backoff_max must be at least backoff_initial")
        return None
    return OpcDaSettings(**values)


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> OpcDaItem | None:
    return OpcDaItem(values["item"])


def check_tags(tags: list[tuple[str, str, int, OpcDaItem]], reader: Reader) -> None:
    """Reject two tags of one device that read the same item."""
    seen: dict[str, str] = {}
    for name, path, line, address in tags:
        if address.item in seen:
            reader.error(line, f"{path}.item", f"item {address.item} is already read by tag {seen[address.item]}")
        else:
            seen[address.item] = name
