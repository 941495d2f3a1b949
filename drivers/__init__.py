"""Southbound drivers, one package per protocol family. Drivers only read; there is no write path.

Each driver kind names a schema module (config keys and checks, cheap to import so that
`gatewayd check-config` does not load protocol stacks) and a runtime class that keeps the contract
of `drivers.kit.Driver`: `from_config(device, rows)`, `async run(sink)`, `stats` and `is_down`.
A schema module whose settings name files holding secrets lists them in `SECRET_FILES` (settings
attribute -> what the file is): the gateway refuses such a file when others can read it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.kit import Driver

# driver kind -> (schema module, "runtime module:class")
DRIVERS: dict[str, tuple[str, str]] = {
    "modbus_tcp": ("drivers.modbus.config", "drivers.modbus.tcp:ModbusTcpDriver"),
    "modbus_udp": ("drivers.modbus.config", "drivers.modbus.transports:ModbusUdpDriver"),
    "modbus_rtu_over_tcp": ("drivers.modbus.config", "drivers.modbus.transports:ModbusRtuOverTcpDriver"),
    "modbus_rtu": ("drivers.modbus.rtu_config", "drivers.modbus.rtu:ModbusRtuBusDriver"),
    "gds": ("drivers.gds.config", "drivers.gds.driver:GdsDriver"),
    "opcua": ("drivers.opcua.config", "drivers.opcua.client:OpcUaDriver"),
    "opcda_gateway": ("drivers.opcda.config", "drivers.opcda.gateway:OpcDaGatewayDriver"),
}


def schema(kind: str) -> ModuleType:
    return importlib.import_module(DRIVERS[kind][0])


def create(device: Any, rows: Any) -> Driver:
    """Build the runtime driver for a validated DeviceConfig whose tags sit at `rows` of the point table."""
    module_name, class_name = DRIVERS[device.driver][1].split(":")
    driver_class = getattr(importlib.import_module(module_name), class_name)
    return driver_class.from_config(device, rows)
