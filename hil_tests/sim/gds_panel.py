"""Simulated gas detection over Modbus TCP: a 16-channel panel, or a Midas-style single-point detector.

    python -m hil_tests.sim.gds_panel --port PORT [--map generic|midas] [--heartbeat-period 0.2]

Each map is written out here from its device's documentation, never taken from the profile under
test, so a profile that disagrees with its device shows as wrong values.

`generic` (the map drivers/gds/profiles/generic.yaml was written for): holding 0 a heartbeat
counter; channel n's block at 100 + 8 (n - 1): concentration float32 (high word first), status word
(bit 0-2 alarm levels 1-3, bit 3 fault, bit 4 inhibit, bit 5 calibration, bit 6 bump test), fault
code. Channels 1-8 read combustible gas in %LEL (the panel's own alarms at 20 and 40 %LEL), 9-16
toxic gas in ppm (at 10 and 20 ppm); all idle near zero with a little noise. The panel raises its
alarm bits from the concentration itself, as a real controller does.

`midas`: one detector, holding registers 40001-40017 of the Honeywell Midas technical manual
(table A1, "User-Readable Modbus Holding Registers"), at 0-based addresses 0-16: 40001 status
(bits 0-3 monitor state, 1 monitoring, 2-4 inhibited, 6 bump test, 7-8 calibration; bits 4-5 fault
status, 2 instrument fault; bit 6 alarm 1; bit 7 alarm 2; bit 11 heartbeat, toggled with every
count here), 40002 gas and cartridge id, 40003-40004 concentration as IEEE float with the low word
in 40003 (CDAB, as the field-used open-source Midas driver decodes it; the manual says only "word 1
of 2"), 40005 the concentration as an integer in tenths, 40006 the number of the most important
fault, 40007 decimal point (bits 0-2) and units (the set bit of the high byte: bit 8 ppm, 9 ppb,
10 %vol, 11 %LEL, 12 mA), 40008 temperature, 40009 cell life in hours, 40010 heartbeat counter,
40011 flow, 40013-40014 and 40015-40016 alarm 1 and 2 thresholds as floats in the same word order.
It measures in ppm (alarms at 10 and 20 ppm) until told otherwise.

Commands on stdin, one a line, each answered "OK ..." on stdout:
    gas CH VALUE          set channel CH's concentration
    fault CH CODE         raise a fault with CODE on channel CH (0 clears it)
    mode CH MODE          normal, inhibit, calibration or bump_test
    unit UNIT             midas: report ppm, ppb, %vol, %LEL or mA in 40007
    freeze | unfreeze     stop or restart the heartbeat counter (the panel's CPU hangs, its comms card answers)

Prints "READY <port>" once listening; exits with status 0 on SIGTERM, SIGINT or end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
from abc import ABC, abstractmethod
import struct
import sys
from collections.abc import Sequence

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil_tests.sim.serving import read_commands, run, serve_until_stopped, start_modbus, stop_on_signals

CHANNELS = 16
FIRST = 100
STRIDE = 8
HEARTBEAT = 0
FAULT_BIT, MODE_BITS = 3, {"normal": 0, "inhibit": 1 << 4, "calibration": 1 << 5, "bump_test": 1 << 6}
COMBUSTIBLE_LEVELS, TOXIC_LEVELS = (20.0, 40.0), (10.0, 20.0)
READ_HOLDING = 3

# the Midas map, 0-based holding addresses of registers 40001-40017
MIDAS_STATUS, MIDAS_CONCENTRATION, MIDAS_INTEGER, MIDAS_FAULT_NUMBER, MIDAS_UNITS = 0, 2, 4, 5, 6
MIDAS_HEARTBEAT, MIDAS_THRESHOLDS, MIDAS_REGISTERS = 9, (12, 14), 17
MIDAS_MONITOR_STATES = {"normal": 1, "inhibit": 4, "bump_test": 6, "calibration": 8}
MIDAS_INSTRUMENT_FAULT = 2 << 4
MIDAS_HEARTBEAT_BIT = 1 << 11
MIDAS_UNIT_BITS = {"ppm": 8, "ppb": 9, "%vol": 10, "%LEL": 11, "mA": 12}


def float_registers(value: float, low_word_first: bool) -> tuple[int, int]:
    """An IEEE float as two registers: high word first (ABCD) or low word first (CDAB)."""
    high, low = struct.unpack(">2H", struct.pack(">f", value))
    return (low, high) if low_word_first else (high, low)


class SimulatedDevice(ABC):
    """What every simulated map shares: a register image rebuilt whenever it is read, and a heartbeat."""

    def __init__(self, size: int) -> None:
        self.heartbeat, self.frozen = 0, False
        self.image = np.zeros(size, dtype=np.uint16)

    @abstractmethod
    def encode(self) -> None:
        """Rebuild `image` from the device's state."""

    @abstractmethod
    def command(self, line: str) -> str:
        """Apply one stdin command; "OK line" or "ERROR line"."""

    def device(self, device_id: int) -> SimDevice:
        registers = SimData(0, values=[0] * len(self.image), datatype=DataType.REGISTERS)
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS) for _ in range(2)]
        inputs = SimData(0, values=[0], datatype=DataType.REGISTERS)  # pymodbus wants every table; reads are refused
        return SimDevice(device_id, simdata=([bits[0]], [bits[1]], [registers], [inputs]), action=self.on_request)

    async def on_request(self, function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Reads of holding registers see the current state; the device refuses everything else."""
        if set_values is not None or function_code != READ_HOLDING:
            return ExcCodes.ILLEGAL_FUNCTION
        self.encode()
        first = address - start_address
        registers[first:first + count] = self.image[address:address + count].tolist()
        return None

    async def beat(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self.frozen:
                self.heartbeat += 1


class Panel(SimulatedDevice):
    """The 16-channel panel of the `generic` map."""

    def __init__(self, seed: int) -> None:
        super().__init__(FIRST + CHANNELS * STRIDE)
        self.rng = np.random.default_rng(seed)
        self.gas = np.zeros(CHANNELS)
        self.fault = np.zeros(CHANNELS, dtype=np.uint16)
        self.mode = np.zeros(CHANNELS, dtype=np.uint16)

    def levels(self, channel: int) -> tuple[float, float]:
        return COMBUSTIBLE_LEVELS if channel < 8 else TOXIC_LEVELS

    def encode(self) -> None:
        self.image[HEARTBEAT] = self.heartbeat % 65536
        noise = np.abs(self.rng.normal(0.0, 0.05, CHANNELS))
        for index in range(CHANNELS):
            base = FIRST + index * STRIDE
            value = self.gas[index] + noise[index]
            self.image[base], self.image[base + 1] = float_registers(value, low_word_first=False)
            level1, level2 = self.levels(index)
            status = int(self.mode[index]) | (int(bool(self.fault[index])) << FAULT_BIT)
            status |= int(value >= level1) | (int(value >= level2) << 1)
            self.image[base + 2], self.image[base + 3] = status, self.fault[index]

    def command(self, line: str) -> str:
        words = line.split()
        try:
            if words == ["freeze"] or words == ["unfreeze"]:
                self.frozen = words[0] == "freeze"
            elif len(words) == 3 and words[0] == "gas":
                self.gas[int(words[1]) - 1] = float(words[2])
            elif len(words) == 3 and words[0] == "fault":
                self.fault[int(words[1]) - 1] = int(words[2])
            elif len(words) == 3 and words[0] == "mode" and words[2] in MODE_BITS:
                self.mode[int(words[1]) - 1] = MODE_BITS[words[2]]
            else:
                return f"ERROR {line}"
        except (ValueError, IndexError):
            return f"ERROR {line}"
        return f"OK {line}"


class MidasDetector(SimulatedDevice):
    """One Midas-style detector (channel 1), its registers encoded from the manual's table A1."""

    def __init__(self) -> None:
        super().__init__(MIDAS_REGISTERS)
        self.gas, self.fault, self.state, self.unit = 0.0, 0, MIDAS_MONITOR_STATES["normal"], "ppm"
        self.thresholds = TOXIC_LEVELS

    def encode(self) -> None:
        status = self.state | (MIDAS_INSTRUMENT_FAULT if self.fault else 0)
        status |= int(self.gas >= self.thresholds[0]) << 6 | int(self.gas >= self.thresholds[1]) << 7
        status |= MIDAS_HEARTBEAT_BIT if self.heartbeat % 2 else 0
        self.image[MIDAS_STATUS] = status
        self.image[MIDAS_CONCENTRATION:MIDAS_CONCENTRATION + 2] = float_registers(self.gas, low_word_first=True)
        self.image[MIDAS_INTEGER] = int(round(self.gas * 10)) % 65536
        self.image[MIDAS_FAULT_NUMBER] = self.fault
        self.image[MIDAS_UNITS] = 1 << MIDAS_UNIT_BITS[self.unit] | 1  # one decimal place
        self.image[MIDAS_HEARTBEAT] = self.heartbeat % 65536
        for address, threshold in zip(MIDAS_THRESHOLDS, self.thresholds):
            self.image[address:address + 2] = float_registers(threshold, low_word_first=True)

    def command(self, line: str) -> str:
        words = line.split()
        try:
            if words == ["freeze"] or words == ["unfreeze"]:
                self.frozen = words[0] == "freeze"
            elif len(words) == 2 and words[0] == "unit" and words[1] in MIDAS_UNIT_BITS:
                self.unit = words[1]
            elif len(words) == 3 and words[1] == "1" and words[0] == "gas":
                self.gas = float(words[2])
            elif len(words) == 3 and words[1] == "1" and words[0] == "fault":
                self.fault = int(words[2])
            elif len(words) == 3 and words[1] == "1" and words[0] == "mode" and words[2] in MIDAS_MONITOR_STATES:
                self.state = MIDAS_MONITOR_STATES[words[2]]
            else:
                return f"ERROR {line}"
        except ValueError:
            return f"ERROR {line}"
        return f"OK {line}"


async def serve(args: argparse.Namespace) -> int:
    panel = Panel(args.seed) if args.map == "generic" else MidasDetector()
    server = ModbusTcpServer(panel.device(args.device_id), address=(args.host, args.port))
    if not await start_modbus(server, args.host, args.port):
        return 1
    stop = stop_on_signals()
    return await serve_until_stopped(server.transport.sockets[0].getsockname()[1], server.shutdown,
                                     panel.beat(args.heartbeat_period), read_commands(panel.command, stop), stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.gds_panel", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--map", choices=("generic", "midas"), default="generic", help="the device to simulate")
    parser.add_argument("--heartbeat-period", type=float, default=1.0, help="seconds between heartbeat counts")
    parser.add_argument("--seed", type=int, default=3)
    return run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
