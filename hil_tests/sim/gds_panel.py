"""A simulated 16-channel gas-detection panel serving the shipped `generic` GDS profile over Modbus TCP.

    python -m hil_tests.sim.gds_panel --port PORT [--heartbeat-period 0.2] [--device-id 1]

The register map is the profile's (drivers/gds/profiles/generic.yaml): holding 0 a heartbeat
counter; channel n's block at 100 + 8 (n - 1): concentration float32, status word (bit 0-2 alarm
levels 1-3, bit 3 fault, bit 4 inhibit, bit 5 calibration, bit 6 bump test), fault code. Channels
1-8 read combustible gas in %LEL (the panel's own alarms at 20 and 40 %LEL), 9-16 toxic gas in ppm
(at 10 and 20 ppm); all idle near zero with a little noise. The panel raises its alarm bits from
the concentration itself, as a real controller does.

Commands on stdin, one a line, each answered "OK ..." on stdout:
    gas CH VALUE          set channel CH's concentration
    fault CH CODE         raise a fault with CODE on channel CH (0 clears it)
    mode CH MODE          normal, inhibit, calibration or bump_test
    freeze | unfreeze     stop or restart the heartbeat counter (the panel's CPU hangs, its comms card answers)

Prints "READY <port>" once listening; exits with status 0 on SIGTERM, SIGINT or end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
from collections.abc import Sequence

import numpy as np
import uvloop
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

CHANNELS = 16
FIRST = 100
STRIDE = 8
HEARTBEAT = 0
FAULT_BIT, MODE_BITS = 3, {"normal": 0, "inhibit": 1 << 4, "calibration": 1 << 5, "bump_test": 1 << 6}
COMBUSTIBLE_LEVELS, TOXIC_LEVELS = (20.0, 40.0), (10.0, 20.0)
READ_HOLDING = 3


class Panel:
    """The panel's state, and its register image rebuilt from it whenever it is read."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.gas = np.zeros(CHANNELS)
        self.fault = np.zeros(CHANNELS, dtype=np.uint16)
        self.mode = np.zeros(CHANNELS, dtype=np.uint16)
        self.heartbeat, self.frozen = 0, False
        self.image = np.zeros(FIRST + CHANNELS * STRIDE, dtype=np.uint16)

    def levels(self, channel: int) -> tuple[float, float]:
        return COMBUSTIBLE_LEVELS if channel < 8 else TOXIC_LEVELS

    def encode(self) -> None:
        self.image[HEARTBEAT] = self.heartbeat % 65536
        noise = np.abs(self.rng.normal(0.0, 0.05, CHANNELS))
        for index in range(CHANNELS):
            base = FIRST + index * STRIDE
            value = self.gas[index] + noise[index]
            self.image[base], self.image[base + 1] = struct.unpack(">2H", struct.pack(">f", value))
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

    def device(self, device_id: int) -> SimDevice:
        registers = SimData(0, values=[0] * len(self.image), datatype=DataType.REGISTERS)
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS) for _ in range(2)]
        inputs = SimData(0, values=[0], datatype=DataType.REGISTERS)  # pymodbus wants every table; reads are refused
        return SimDevice(device_id, simdata=([bits[0]], [bits[1]], [registers], [inputs]), action=self.on_request)

    async def on_request(self, function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Reads of holding registers see the current state; the panel refuses everything else."""
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


async def read_commands(panel: Panel, stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            print(panel.command(line.decode().strip()), flush=True)
    stop.set()


async def serve(args: argparse.Namespace) -> int:
    panel = Panel(args.seed)
    server = ModbusTcpServer(panel.device(args.device_id), address=(args.host, args.port))
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"READY {server.transport.sockets[0].getsockname()[1]}", flush=True)
    tasks = [asyncio.create_task(panel.beat(args.heartbeat_period)), asyncio.create_task(read_commands(panel, stop))]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await server.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.gds_panel", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--heartbeat-period", type=float, default=1.0, help="seconds between heartbeat counts")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
