"""Configuration schema of the Modbus drivers: device settings, tag addressing, cross-field rules.

Register addresses are 0-based protocol addresses (what goes in the request), not the 4xxxx
"Modicon" numbers of some manuals. A tag occupies `width` registers (or one bit); two tags may not
overlap except bit tags sharing a register, so a typo that reads one value twice is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.schema import Field, Reader, integer, number, one_of, text

MAX_READ_REGISTERS = 125  # Modbus application protocol, function codes 3 and 4
MAX_READ_BITS = 2000  # function codes 1 and 2
ADDRESS_SPACE = 65536

REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")
REGISTER_TYPES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bit": 1}


@dataclass(frozen=True)
class ModbusAddress:
    """Where a tag lives and how its raw registers become an engineering value: raw * scale + offset."""

    table: str
    address: int
    dtype: str
    bit: int | None = None
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        """Registers (or bits, for coil and discrete tables) that the tag occupies."""
        return 1 if self.table in BIT_TABLES else REGISTER_TYPES[self.dtype]

    @property
    def end(self) -> int:
        return self.address + self.width


@dataclass(frozen=True)
class ModbusTcpSettings:
    host: str
    port: int = 502
    unit_id: int = 1
    max_gap: int = 10
    max_block: int = MAX_READ_REGISTERS
    retries: int = 1
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


DEVICE_FIELDS = {
    "host": Field(text, doc="IP address or host name of the PLC or gateway"),
    "port": Field(integer(1, 65535), 502, "TCP port"),
    "unit_id": Field(integer(0, 255), 1, "Modbus unit (slave) id"),
    "max_gap": Field(integer(0, MAX_READ_REGISTERS), 10,
                     "unused registers a block read may span to save a request"),
    "max_block": Field(integer(1, MAX_READ_REGISTERS), MAX_READ_REGISTERS,
                       "largest block read in registers (some devices accept fewer than 125)"),
    "retries": Field(integer(0, 10), 1, "immediate retries of a failed request before the poll fails"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 60.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = {
    "table": Field(one_of(*REGISTER_TABLES, *BIT_TABLES), "holding", "holding, input, coil or discrete"),
    "address": Field(integer(0, ADDRESS_SPACE - 1), doc="0-based register or bit address"),
    "type": Field(one_of(*REGISTER_TYPES, "bool"), "uint16",
                  "int16, uint16, int32, uint32, float32, float64, bit (with `bit:`), or bool for coils"),
    "bit": Field(integer(0, 15), None, "bit number 0-15 within the register, for type bit"),
    "byte_order": Field(one_of("big", "little"), "big", "byte order within each register"),
    "word_order": Field(one_of("big", "little"), "big", "register order of 32/64-bit values"),
    "scale": Field(number(), 1.0, "engineering value = raw * scale + offset"),
    "offset": Field(number(), 0.0, "engineering value = raw * scale + offset"),
}


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> ModbusTcpSettings | None:
    if values["backoff_max"] < values["backoff_initial"]:
        reader.error(line, f"{path}.backoff_max", "backoff_max must be at least backoff_initial")
        return None
    return ModbusTcpSettings(**values)


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> ModbusAddress | None:
    """Cross-field rules between table, type, bit and address; None (with issues recorded) if invalid."""
    table, dtype, bit = values["table"], values["type"], values["bit"]
    problems = []
    if table in BIT_TABLES:
        if dtype not in ("bool", "uint16"):
            problems.append(f"a {table} tag is a single bit: type must be bool, not {dtype}")
        dtype = "bool"
    elif dtype == "bool":
        problems.append(f"type bool is for coil or discrete tables; in a {table} register use type bit with bit: 0-15")
    elif dtype == "bit" and bit is None:
        problems.append("type bit needs `bit:` (0-15)")
    elif dtype != "bit" and bit is not None:
        problems.append(f"`bit:` is only valid with type bit, not {dtype}")
    if dtype in ("int16", "uint16", "bit", "bool") and values["word_order"] != "big":
        problems.append(f"word_order has no meaning for a single-register {dtype}")
    address = ModbusAddress(table, values["address"], dtype, bit, values["byte_order"],
                            values["word_order"], values["scale"], values["offset"])
    if not problems and address.end > ADDRESS_SPACE:
        problems.append(f"{dtype} at address {address.address} runs past the last address {ADDRESS_SPACE - 1}")
    for problem in problems:
        reader.error(line, path, problem)
    return None if problems else address


def check_tags(tags: list[tuple[str, str, int, ModbusAddress]], reader: Reader) -> None:
    """Reject tags of one device whose registers overlap (bit tags may share a register).

    `tags` holds (name, key path, line, address) of each valid tag of the device.
    """
    by_table: dict[str, list[tuple[int, int, str, str, int, ModbusAddress]]] = {}
    for name, path, line, address in tags:
        by_table.setdefault(address.table, []).append((address.address, address.end, name, path, line, address))
    for table, spans in by_table.items():
        spans.sort(key=lambda span: (span[0], span[1]))
        for first, second in zip(spans, spans[1:]):
            start_a, end_a, name_a, _, _, addr_a = first
            start_b, _, _, path_b, line_b, addr_b = second
            both_bits = addr_a.dtype == "bit" and addr_b.dtype == "bit"
            if start_b < end_a and not both_bits:
                reader.error(line_b, path_b,
                             f"{table} register {start_b} overlaps tag {name_a} "
                             f"({table} {start_a}..{end_a - 1}); give each value its own registers")
