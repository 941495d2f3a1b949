"""Modbus over IP besides plain TCP: Modbus UDP and RTU framing over TCP. Read-only.

Both poll exactly like the Modbus TCP driver (`drivers.modbus.tcp`): the same planned blocks,
decoders, timeouts, retries, decode-error checks, outage events and backoff. They differ only in
the link (`drivers.modbus.link`) and what goes on the wire:

- `modbus_udp`: the Modbus TCP frame (MBAP header) in one datagram per request. There is no
  connection to lose, so a dead device shows as requests without answers; after each timeout or
  garbage answer the socket is replaced, so a datagram answered late is never taken for the next
  request's reply. A datagram that is not exactly one answer frame is garbage.
- `modbus_rtu_over_tcp`: RTU frames (unit, PDU, CRC, no MBAP header) over a TCP connection, as
  serial device servers in "raw" or "TCP server" mode pass them to and from an RS-485 line. The
  device behind them is one slave (`unit_id`); for several slaves behind one serial server, declare
  one device per slave (the server serialises them on its line). A bad CRC, another unit or
  function, or a wrong byte count is garbage.
"""

from __future__ import annotations

from drivers.modbus.link import Link, MbapFraming, RtuFraming, UdpLink
from drivers.modbus.tcp import ModbusTcpDriver


class ModbusUdpDriver(ModbusTcpDriver):
    link_class = UdpLink
    framing_class = MbapFraming


class ModbusRtuOverTcpDriver(ModbusTcpDriver):
    link_class = Link
    framing_class = RtuFraming
