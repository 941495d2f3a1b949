"""One-shot read-only Modbus readers for the probe, on the drivers' own clients (function codes 1-4).

Each reader is an async context manager that opens the link (a TCP connection, or the serial port
with its line settings), yields `read(table, start, count)` and closes the link on the way out. A
read raises the drivers' `NoAnswer` (nothing back in time, no connection) or `BadAnswer` (a Modbus
exception, named, or garbage), as the daemon's drivers would see the same device.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Read = Callable[[str, int, int], Awaitable[list[int] | list[bool]]]


@contextlib.asynccontextmanager
async def tcp_reader(target: Any, unit: int, timeout: float) -> AsyncIterator[Read]:
    """Modbus TCP (MBAP framing) over `drivers.modbus.link.Link`."""
    from drivers.modbus.link import Link, MbapFraming

    link = Link(MbapFraming(unit), target.host, target.port)
    await link.open(timeout=timeout)
    try:
        async def read(table: str, start: int, count: int) -> list[int] | list[bool]:
            return await link.read(table, start, count, timeout=timeout)

        yield read
    finally:
        link.close()


@contextlib.asynccontextmanager
async def rtu_reader(target: Any, unit: int, timeout: float, line: dict[str, Any]) -> AsyncIterator[Read]:
    """Modbus RTU on a serial port through `drivers.modbus.rtu.SerialLine`: the inter-frame silence
    before each request, the reply complete only once the line falls silent, garbage drained."""
    from drivers.modbus.reads import CommError, decode_error, exception_error
    from drivers.modbus.rtu import LineError, NoReply, SerialLine
    from drivers.modbus.rtu_config import SerialSettings
    from drivers.modbus.rtu_frame import ExceptionReply, FrameError, parse_reply, read_request

    settings = SerialSettings(port=target.device, **line)
    try:
        serial_line = SerialLine(settings)
    except LineError as exc:
        raise CommError(str(exc)) from None
    try:
        async def read(table: str, start: int, count: int) -> list[int] | list[bool]:
            try:
                await serial_line.quiet(settings.frame_silence)
                serial_line.send(read_request(unit, table, start, count))
                return parse_reply(await serial_line.receive(unit, timeout), unit, table, count)
            except ExceptionReply as exc:
                raise exception_error(exc.code) from None
            except (NoReply, LineError) as exc:
                raise CommError(str(exc)) from None
            except FrameError as exc:
                raise decode_error(str(exc)) from None

        yield read
    finally:
        serial_line.close()
