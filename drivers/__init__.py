"""Southbound drivers, one package per protocol family. Drivers only read; there is no write path.

Each driver kind names a schema module (config keys and checks, cheap to import so that
`gatewayd check-config` does not load protocol stacks) and a runtime class that keeps the contract
of `drivers.kit.Driver`: `from_config(device, rows)`, `async run(sink)`, `stats` and `is_down`.
A schema module whose settings name files holding secrets lists them in `SECRET_FILES` (settings
attribute -> what the file is): the gateway refuses such a file when others can read it.

What several drivers share sits beside the packages, never inside one (a driver imports no other
driver's package): `kit` (contract, health, backoff, block poller), `values` (numbers and ranges),
and for the subscribing drivers `jsonmap` with `jsonpointer` and `sourcetime` (a tag's place in a
JSON payload), `sourceorder` (source times that run backwards), `inbox` (the bounded queue between
receiving and decoding, and the gap event for what it drops), `intake` (where a decoded reading
goes) and `writebatch` (one drain's readings in few sink calls).

Besides the built-in kinds below, an installed package may register kinds of its own under the
entry point group `gatewayd.drivers` (`drivers.plugins`); one is imported only when a config names it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.kit import Driver

from drivers import plugins

# built-in driver kind -> (schema module, "runtime module:class")
DRIVERS: dict[str, tuple[str, str]] = {
    "modbus_tcp": ("drivers.modbus.config", "drivers.modbus.tcp:ModbusTcpDriver"),
    "modbus_udp": ("drivers.modbus.config", "drivers.modbus.transports:ModbusUdpDriver"),
    "modbus_rtu_over_tcp": ("drivers.modbus.config", "drivers.modbus.transports:ModbusRtuOverTcpDriver"),
    "modbus_rtu": ("drivers.modbus.rtu_config", "drivers.modbus.rtu:ModbusRtuBusDriver"),
    "gds": ("drivers.gds.config", "drivers.gds.driver:GdsDriver"),
    "opcua": ("drivers.opcua.config", "drivers.opcua.client:OpcUaDriver"),
    "opcda_gateway": ("drivers.opcda.config", "drivers.opcda.gateway:OpcDaGatewayDriver"),
    "mqtt": ("drivers.mqtt.config", "drivers.mqtt.driver:MqttDriver"),
    "websocket": ("drivers.websocket.config", "drivers.websocket.driver:WebSocketDriver"),
}


def kinds() -> list[str]:
    """Every kind a config may name: the built-in ones, then those installed packages register."""
    return [*DRIVERS, *sorted(set(plugins.registered()) - set(DRIVERS))]


def schema(kind: str) -> ModuleType:
    """The schema module of a kind; for a kind from a package, plugins.PluginError when it is unusable."""
    if kind in DRIVERS and not plugins.registered().get(kind):
        return importlib.import_module(DRIVERS[kind][0])
    return plugins.schema(kind, frozenset(DRIVERS))


def create(device: Any, rows: Any) -> Driver:
    """Build the runtime driver for a validated DeviceConfig whose tags sit at `rows` of the point table."""
    reference = DRIVERS[device.driver][1] if device.driver in DRIVERS else schema(device.driver).DRIVER
    return plugins.runtime_class(reference).from_config(device, rows)
