"""A Modbus TCP unit whose every holding register changes every period: the load of the CPU benchmark.

    python -m hil_tests.sim.counters --port PORT --registers N [--host 127.0.0.1] [--period 1.0]

Holding registers 0..N-1 hold uint16 counters, register i starting at i and each incremented by one
every period (wrapping at 65536), so every value a gateway reads once a period differs from the last
one it read: nothing is ever suppressed by report-by-exception, and every read is a value to forward.
Prints "READY <port>" once listening and exits with status 0 on SIGTERM or SIGINT (`serving`).
Writes are refused with ILLEGAL ADDRESS: the gateway only reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil_tests.sim.serving import run, serve_until_stopped, start_modbus

HOLDING_READ = 3


class Counters:
    """N uint16 counters, stepped together; the pymodbus request hook copies the slice being read."""

    def __init__(self, registers: int) -> None:
        self.image = np.arange(registers, dtype=np.uint16)

    def device(self, device_id: int) -> SimDevice:
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS) for _ in range(2)]
        inputs = SimData(0, values=[0], datatype=DataType.REGISTERS)
        holding = SimData(0, values=[0] * len(self.image), datatype=DataType.REGISTERS)
        return SimDevice(device_id, simdata=([bits[0]], [bits[1]], [holding], [inputs]), action=self.on_request)

    async def on_request(self, function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        if function_code != HOLDING_READ:
            return ExcCodes.ILLEGAL_FUNCTION
        first = address - start_address
        registers[first:first + count] = self.image[first:first + count].tolist()
        return None

    async def run_model(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.image += np.uint16(1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.counters", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--registers", type=int, required=True, help="holding registers 0..N-1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device-id", type=int, default=1, help="Modbus unit id to answer")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between steps")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    counters = Counters(args.registers)
    server = ModbusTcpServer(counters.device(args.device_id), address=(args.host, args.port))
    if not await start_modbus(server, args.host, args.port):
        return 1
    return await serve_until_stopped(server.transport.sockets[0].getsockname()[1], server.shutdown,
                                     counters.run_model(args.period))


def main(argv: Sequence[str] | None = None) -> int:
    return run(serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
