"""The slave's side of Modbus RTU framing: reply frames, as the simulated bus and the framing tests send them.

The daemon only ever reads (drivers.modbus.rtu_frame builds requests and parses replies); a slave's
replies are built here, beside the simulators, with the daemon's own CRC and function codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.modbus.rtu_frame import EXCEPTION_FLAG, FUNCTION_CODES, with_crc


def encode_registers(unit_id: int, table: str, values: Sequence[int] | Sequence[bool]) -> bytes:
    """A slave's reply frame carrying `values` (bits packed eight to a byte, registers big-endian)."""
    function = FUNCTION_CODES[table]
    if function <= 2:
        data = bytearray(-(-len(values) // 8))
        for index, bit in enumerate(values):
            data[index // 8] |= bool(bit) << (index % 8)
    else:
        data = b"".join(int(value).to_bytes(2, "big") for value in values)
    return with_crc(bytes((unit_id, function, len(data))) + bytes(data))


def encode_exception(unit_id: int, function: int, code: int) -> bytes:
    """A slave's exception reply to `function` with exception `code`."""
    return with_crc(bytes((unit_id, function | EXCEPTION_FLAG, code)))
