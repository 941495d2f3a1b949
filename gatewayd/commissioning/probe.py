"""`gatewayd probe modbus`: read a register range once and show every decoding side by side.

An integrator with a register map that says "float" but not which word order, or a map that is wrong,
reads the range once and sees each start address decoded as every type and byte/word order the Modbus
drivers support; with a value known from the plant (the DCS screen, a local display) `--expect` ranks
the candidates that decode to it. Decoding is the drivers' own (`drivers.modbus.codec.BlockDecoder`),
so what the probe shows under an order is what a tag with that `byte_order`/`word_order` will read.

Read-only: the project's own clients send function codes 1-4 only (`drivers.modbus.link` over TCP,
`drivers.modbus.rtu.SerialLine` with `rtu_frame` on a serial line), one request at a time, split at
the protocol's per-request limit (125 registers, 2000 bits).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from drivers.kit import BadAnswer, NoAnswer
from drivers.modbus.codec import BlockDecoder
from drivers.modbus.config import ADDRESS_SPACE, BIT_TABLES, MAX_READ_BITS, MAX_READ_REGISTERS, ModbusAddress
from drivers.modbus.plan import Block

TABLES = {"co": "coil", "di": "discrete", "hr": "holding", "ir": "input"}
# the four classic spellings as (byte order inside a register, word order of the registers)
ORDERS = {"ABCD": ("big", "big"), "CDAB": ("big", "little"), "BADC": ("little", "big"), "DCBA": ("little", "little")}
SINGLE_ORDERS = {"AB": ("big", "big"), "BA": ("little", "big")}  # a 16-bit value has only its byte order
TYPES = ("int16", "uint16", "int32", "uint32", "float32", "float64")
WIDTHS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
DEFAULT_PORT = 502
DEFAULT_TOLERANCE = 1e-4


class ProbeError(Exception):
    """Bad input or a device that did not answer the read: one message, nothing shown."""


@dataclass(frozen=True)
class Target:
    """Where the device is: `tcp` (host, port) or `rtu` (a serial port and its line settings)."""

    kind: str
    host: str = ""
    port: int = DEFAULT_PORT
    device: str = ""

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}" if self.kind == "tcp" else f"rtu://{self.device}"


@dataclass(frozen=True)
class Candidate:
    """One way to read a value starting at `address`: a type in a byte/word order, and what it gives."""

    address: int
    dtype: str
    order: str
    value: float


def parse_target(url: str) -> Target:
    """tcp://HOST[:PORT] or rtu:///dev/ttyX; ProbeError naming what is valid otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "tcp" and parts.hostname:
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ProbeError(f"{url}: the port is not a number in 1..65535") from None
        if parts.path not in ("", "/"):
            raise ProbeError(f"{url}: a tcp URL has no path; write tcp://HOST:PORT")
        return Target("tcp", host=parts.hostname, port=port)
    if parts.scheme == "rtu" and not parts.netloc and parts.path.startswith("/"):
        return Target("rtu", device=parts.path)
    raise ProbeError(f"{url!r} is not a Modbus device; write tcp://HOST:PORT or rtu:///dev/ttyX")


def parse_range(text: str) -> tuple[int, int]:
    """'START-END' (both included) or one address: (start, count), inside the 65536 addresses."""
    first, dash, last = text.partition("-")
    try:
        start, end = int(first), int(last) if dash else int(first)
    except ValueError:
        raise ProbeError(f"--range {text!r}: write START-END (both included), e.g. 0-200, or one address") from None
    if not 0 <= start <= end < ADDRESS_SPACE:
        raise ProbeError(f"--range {text!r}: addresses run 0..{ADDRESS_SPACE - 1}, START not after END")
    return start, end - start + 1


def parse_expect(text: str) -> tuple[float, int]:
    """'VALUE@ADDRESS': a value known from the plant and the address its register(s) start at."""
    value, at, address = text.rpartition("@")
    try:
        return float(value), int(address)
    except ValueError:
        raise ProbeError(f"--expect {text!r}: write VALUE@ADDRESS, e.g. 23.5@100") from None


def parse_types(text: str | None) -> tuple[str, ...]:
    """--types: a comma-separated subset of TYPES, in TYPES' order; all when not given."""
    if not text:
        return TYPES
    asked = set(text.split(","))
    unknown = sorted(asked - set(TYPES))
    if unknown:
        raise ProbeError(f"--types: {', '.join(unknown)} unknown; valid: {', '.join(TYPES)}")
    return tuple(dtype for dtype in TYPES if dtype in asked)


def chunks(table: str, start: int, count: int) -> list[tuple[int, int]]:
    """(start, count) requests within the protocol's limit per read."""
    limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
    return [(first, min(limit, start + count - first)) for first in range(start, start + count, limit)]


async def read_range(target: Target, unit: int, table: str, start: int, count: int, timeout: float,
                     line_settings: dict | None = None) -> list[int] | list[bool]:
    """The registers (or bits) start..start+count-1, read in as many requests as the limit needs.

    ProbeError for a device that does not answer, answers with a Modbus exception (named) or garbage.
    """
    from gatewayd.commissioning.wire import rtu_reader, tcp_reader

    opened = tcp_reader(target, unit, timeout) if target.kind == "tcp" else \
        rtu_reader(target, unit, timeout, line_settings or {})
    values: list = []
    where = f"{target} unit {unit}"
    try:
        async with opened as read:
            for first, size in chunks(table, start, count):
                where = f"{target} unit {unit}: {table} {first}..{first + size - 1}"
                values.extend((await read(table, first, size))[:size])  # bits come padded to whole bytes
    except (NoAnswer, BadAnswer) as exc:
        raise ProbeError(f"{where}: {exc}") from None
    return values


def candidates(table: str, start: int, registers: list[int], types: tuple[str, ...] = TYPES) -> list[Candidate]:
    """Every type in every order at every start address whose registers were all read, decoded by the
    drivers' own decoder (no scale, no offset)."""
    wanted = []
    for offset in range(len(registers)):
        for dtype in types:
            if offset + WIDTHS[dtype] > len(registers):
                continue
            for order, (byte_order, word_order) in (SINGLE_ORDERS if WIDTHS[dtype] == 1 else ORDERS).items():
                address = ModbusAddress(table, start + offset, dtype, None, byte_order, word_order)
                wanted.append((address, offset, order))
    if not wanted:
        return []
    block = Block(table, start, len(registers), tuple((index, item[1]) for index, item in enumerate(wanted)))
    values = BlockDecoder(block, [item[0] for item in wanted]).decode(registers)
    return [Candidate(address.address, address.dtype, order, float(value))
            for (address, _, order), value in zip(wanted, values)]


def matches(found: list[Candidate], value: float, address: int, tolerance: float) -> list[Candidate]:
    """The candidates at `address` within `tolerance` (relative, at least absolute for small values) of
    `value`, closest first."""
    limit = tolerance * max(1.0, abs(value))
    near = [c for c in found if c.address == address and np.isfinite(c.value) and abs(c.value - value) <= limit]
    return sorted(near, key=lambda c: (abs(c.value - value), WIDTHS[c.dtype]))


def format_value(value: float, dtype: str) -> str:
    if not np.isfinite(value):
        return str(value)
    return f"{value:.7g}" if dtype.startswith("float") else str(int(value))


def render_registers(table: str, start: int, registers: list[int], types: tuple[str, ...],
                     expected: dict[int, float], tolerance: float) -> list[str]:
    """Per start address: the raw word, then one line per type with its value in each order; a value
    that matches an `--expect` at its address is marked with `<`."""
    found = candidates(table, start, registers, types)
    by_address: dict[int, list[Candidate]] = {}
    for candidate in found:
        by_address.setdefault(candidate.address, []).append(candidate)
    lines = []
    for offset, raw in enumerate(registers):
        address = start + offset
        lines.append(f"{table} {address}  raw 0x{raw:04x} ({raw})")
        hits = set(matches(found, expected[address], address, tolerance)) if address in expected else set()
        for dtype in types:
            cells = [f"{c.order} {format_value(c.value, dtype)}{' <' if c in hits else ''}"
                     for c in by_address.get(address, []) if c.dtype == dtype]
            if cells:
                lines.append(f"  {dtype:<8}" + "  ".join(f"{cell:<24}" for cell in cells).rstrip())
    return lines


def render_bits(table: str, start: int, bits: list[bool]) -> list[str]:
    """Sixteen bits a line, lowest address first."""
    return [f"{table} {first:>5}: " + " ".join(str(int(bit)) for bit in bits[first - start:first - start + 16])
            for first in range(start, start + len(bits), 16)]


def render_expectations(table: str, start: int, registers: list[int], types: tuple[str, ...],
                        expected: dict[int, float], tolerance: float) -> tuple[list[str], bool]:
    """For each --expect, the candidates that decode to it, best first; and whether every one was found."""
    found = candidates(table, start, registers, types)
    lines, all_found = [], True
    for address, value in expected.items():
        best = matches(found, value, address, tolerance)
        all_found &= bool(best)
        if best:
            ranked = ", ".join(f"{c.dtype} {c.order} = {format_value(c.value, c.dtype)}" for c in best)
            lines.append(f"expect {value:.10g} at {table} {address}: {ranked}")
        else:
            lines.append(f"expect {value:.10g} at {table} {address}: no type or order decodes to it "
                         f"(within {tolerance:g} relative); check the address, the unit and the table")
    return lines, all_found


def run_probe(target: Target, unit: int, table: str, start: int, count: int, timeout: float,
              line_settings: dict | None = None) -> list[int] | list[bool]:
    """The range read once (asyncio.run around `read_range`)."""
    return asyncio.run(read_range(target, unit, table, start, count, timeout, line_settings))
