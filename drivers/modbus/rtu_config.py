"""Configuration schema of a Modbus RTU serial bus (`driver: modbus_rtu`): the line and its slaves.

A serial line is one device: the port and its framing (baud, parity, stop bits, byte size, RS-485
mode) belong to the line, and each slave on it lists its own tags with its own unit id, poll
interval and timeout:

    - name: bus1
      driver: modbus_rtu
      port: /dev/ttyUSB0
      baud: 9600
      parity: N
      stop_bits: 2
      slaves:
        - unit_id: 1
          poll_interval: 1s
          tags:
            - {name: PT301, address: 0, type: float32, unit: MPa}
        - unit_id: 7
          timeout: 300ms
          tags:
            - {name: TT302, address: 10, type: int16, scale: 0.1}

Tags take the same keys as Modbus TCP tags (`drivers.modbus.config`), and two tags of one slave may
not overlap. Unit ids are unique on a bus; slaves left without `poll_interval` or `timeout` use the
device's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.modbus import config as modbus
from drivers.modbus.config import MAX_READ_REGISTERS, ModbusAddress
from core.schema import positive_duration, optional
from core.schema import Field, Invalid, Reader, boolean, integer, join, number, one_of, text

STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
PARITIES = ("N", "E", "O")
FIXED_SILENCE_ABOVE = 19200  # Modbus over serial line: above 19200 baud the silence is fixed
FIXED_SILENCE = 0.00175  # seconds, 1.75 ms
FRAME_SILENCE_CHARS = 3.5
TAGS_KEY = "slaves"


def baud_rate(value: Any) -> int:
    if isinstance(value, bool) or value not in STANDARD_BAUDS:
        raise Invalid(f"{value!r} is not a standard baud rate: {', '.join(map(str, STANDARD_BAUDS))}")
    return value


def whole_number_of(*choices: int) -> Any:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or value not in choices:
            raise Invalid(f"{value!r} is not one of: {', '.join(map(str, choices))}")
        return value

    return convert


@dataclass(frozen=True)
class SerialSettings:
    """The line: where it is, how characters are framed, and how the bus treats failing slaves."""

    port: str
    baud: int = 9600
    parity: str = "N"
    stop_bits: int = 1
    byte_size: int = 8
    silence: float | None = None  # inter-frame silence override, seconds
    rs485: bool = False
    rts_delay_before_tx: float = 0.0
    rts_delay_after_tx: float = 0.0
    max_gap: int = 10
    max_block: int = MAX_READ_REGISTERS
    breaker_failures: int = 3
    probe_interval: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0

    @property
    def char_bits(self) -> int:
        """Bits on the wire per character: start, data, parity, stop."""
        return 1 + self.byte_size + (self.parity != "N") + self.stop_bits

    @property
    def char_time(self) -> float:
        return self.char_bits / self.baud

    @property
    def frame_silence(self) -> float:
        """Silence that separates frames: 3.5 characters, fixed 1.75 ms above 19200 baud, or the override."""
        if self.silence is not None:
            return self.silence
        if self.baud > FIXED_SILENCE_ABOVE:
            return FIXED_SILENCE
        return FRAME_SILENCE_CHARS * self.char_time


@dataclass(frozen=True)
class RtuSlave:
    """One slave on the bus; None for poll_interval or timeout means the device's."""

    unit_id: int
    poll_interval: float | None = None
    timeout: float | None = None
    line: int = 0


@dataclass(frozen=True)
class RtuAddress:
    """A tag on a bus: its slave and where it lives in that slave's map."""

    slave: RtuSlave
    register: ModbusAddress


DEVICE_FIELDS = {
    "port": Field(text, doc="serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."),
    "baud": Field(baud_rate, 9600, f"one of {', '.join(map(str, STANDARD_BAUDS))}"),
    "parity": Field(one_of(*PARITIES), "N", "N (none), E (even) or O (odd)"),
    "stop_bits": Field(whole_number_of(1, 2), 1, "1 or 2"),
    "byte_size": Field(whole_number_of(7, 8), 8, "data bits per character, 8 for RTU (7 only for odd devices)"),
    "silence": Field(optional(positive_duration), None,
                     "duration: inter-frame silence; default 3.5 characters, 1.75 ms above 19200 baud"),
    "rs485": Field(boolean, False, "let the kernel toggle RTS around each transmission (RS-485 adapters "
                   "that need it); the port must support the RS-485 ioctl"),
    "rts_delay_before_tx": Field(number(0.0, 1.0), 0.0, "rs485: seconds RTS is raised before sending"),
    "rts_delay_after_tx": Field(number(0.0, 1.0), 0.0, "rs485: seconds RTS stays raised after sending"),
    "max_gap": modbus.DEVICE_FIELDS["max_gap"],
    "max_block": modbus.DEVICE_FIELDS["max_block"],
    "breaker_failures": Field(integer(1, 100), 3, "failed polls in a row that open a slave's circuit: "
                              "it is then only probed every probe_interval"),
    "probe_interval": Field(positive_duration, 10.0, "duration: how often a slave with an open circuit is tried"),
    "backoff_initial": Field(number(0.0), 1.0, "first delay in seconds before reopening a lost port, doubled "
                             "up to backoff_max"),
    "backoff_max": Field(number(0.0), 30.0, "longest delay in seconds before reopening a lost port"),
}

SLAVE_FIELDS = {
    "unit_id": Field(integer(1, 247), doc="slave address on the bus, 1-247"),
    "poll_interval": Field(optional(positive_duration), None, "duration: default the device's poll_interval"),
    "timeout": Field(optional(positive_duration), None, "duration: per request; default the device's timeout"),
    "tags": Field(lambda value: value, doc="the slave's tags, with the keys of Modbus TCP tags"),
}

NESTED_FIELDS = SLAVE_FIELDS  # `gatewayd schema` shows these under slaves[], each with its tags
TAG_FIELDS = modbus.TAG_FIELDS


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> SerialSettings | None:
    if values["backoff_max"] < values["backoff_initial"]:
        reader.error(line, f"{path}.backoff_max", "backoff_max must be at least backoff_initial")
        return None
    if not values["rs485"] and (values["rts_delay_before_tx"] or values["rts_delay_after_tx"]):
        reader.error(line, f"{path}.rs485", "RTS delays need rs485: true")
        return None
    return SerialSettings(**values)


def tag_items(node: dict, path: str, reader: Reader, settings: Any) -> list[tuple[Any, str, int, dict[str, Any]]]:
    """Every slave's tags, each with its slave as context; unit ids must be unique on the bus."""
    slaves_path = join(path, TAGS_KEY)
    items = []
    seen: dict[int, int] = {}
    for slave_node, slave_path, slave_line in reader.items(node.get(TAGS_KEY), slaves_path,
                                                          Reader.key_line(node, TAGS_KEY)):
        values = reader.section(slave_node, slave_path, slave_line, SLAVE_FIELDS)
        if values is None or "unit_id" not in values or "tags" not in values:
            continue
        unit_id = values["unit_id"]
        if unit_id in seen:
            reader.error(Reader.key_line(slave_node, "unit_id"), join(slave_path, "unit_id"),
                         f"unit id {unit_id} is already used on this bus by the slave at line {seen[unit_id]}")
            continue
        seen[unit_id] = slave_line
        # a key that failed is missing from values; its error is recorded and the tags are still checked
        slave = RtuSlave(unit_id, values.get("poll_interval"), values.get("timeout"), slave_line)
        tags = reader.items(values["tags"], join(slave_path, "tags"), Reader.key_line(slave_node, "tags"))
        if not tags:
            reader.error(slave_line, join(slave_path, "tags"), "a slave needs at least one tag")
        items += [(tag_node, tag_path, tag_line, {"slave": slave}) for tag_node, tag_path, tag_line in tags]
    return items


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> RtuAddress | None:
    slave = values.pop("slave")
    register = modbus.build_address(values, reader, path, line)
    return None if register is None else RtuAddress(slave, register)


def staleness(poll_interval: float, settings: SerialSettings, address: RtuAddress) -> tuple[float, float]:
    """A bus tag is refreshed every poll interval of its slave; STALE after three of them by default."""
    interval = address.slave.poll_interval or poll_interval
    return interval, 3 * interval


def check_tags(tags: list[tuple[str, str, int, RtuAddress]], reader: Reader) -> None:
    """Overlapping registers are checked per slave: two slaves may use the same addresses."""
    by_slave: dict[int, list[tuple[str, str, int, ModbusAddress]]] = {}
    for name, path, line, address in tags:
        by_slave.setdefault(address.slave.unit_id, []).append((name, path, line, address.register))
    for spans in by_slave.values():
        modbus.check_tags(spans, reader)
