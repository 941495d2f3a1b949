"""Modbus over IP besides plain TCP: Modbus UDP and RTU framing over TCP. Read-only.

Both poll exactly like the Modbus TCP driver (`drivers.modbus.tcp`): the same planned blocks,
decoders, timeouts, retries, outage events and backoff, with its guard against pymodbus swallowing
a cancellation. They differ only in what pymodbus puts on the wire:

- `modbus_udp`: the Modbus TCP frame (MBAP header) in one datagram per request. There is no
  connection to lose, so a dead device shows as requests without answers; after each timeout the
  socket is replaced, so a datagram answered late is never taken for the next request's reply.
- `modbus_rtu_over_tcp`: RTU frames (unit, PDU, CRC, no MBAP header) over a TCP connection, as
  serial device servers in "raw" or "TCP server" mode pass them to and from an RS-485 line. The
  device behind them is one slave (`unit_id`); for several slaves behind one serial server, declare
  one device per slave (the server serialises them on its line).
"""

from __future__ import annotations

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient, AsyncModbusUdpClient

from drivers.modbus.tcp import ModbusTcpDriver


class ModbusUdpDriver(ModbusTcpDriver):
    client_class = AsyncModbusUdpClient
    framer = FramerType.SOCKET


class ModbusRtuOverTcpDriver(ModbusTcpDriver):
    client_class = AsyncModbusTcpClient
    framer = FramerType.RTU
