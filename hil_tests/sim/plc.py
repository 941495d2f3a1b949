"""A simulated PLC: the plant of `layout.py` served over Modbus TCP, with a small process model.

    python -m hil_tests.sim.plc --port PORT --tags N [--host 127.0.0.1] [--device-id 1]
                                [--period 1.0] [--seed S] [--overrides] [--served FILE]

Prints "READY <port>" on stdout once listening (with --port 0 the system picks the port), and exits
with status 0 on SIGTERM or SIGINT. It runs as its own process so that tests can kill (SIGKILL),
freeze (SIGSTOP) and restart it like a real PLC.

The model keeps one float64 array of engineering values, steps it every period (vectorised for the
generic values) and encodes it into one uint16 image per table. The pymodbus server's request hook
copies the requested slice of the image into its registers before answering, so a read always sees
the latest step and the server never encodes anything itself. Writes are refused with ILLEGAL ADDRESS
except a single-register write to the MARKER register, which benchmarks use to time the gateway.
With `--overrides` (tests only) any holding register may be written, as an engineer forces a value
in a real PLC: the register then keeps the written value and the process model no longer drives it,
so a test can raise an alarm or flip a bypass switch at a moment of its choosing. With `--served FILE`
every read request answered is recorded, and written to FILE as JSON at exit (SIGTERM or SIGINT):
`[[unix time, function code, address, count], ...]` with address and count as the request hook gets
them, so a test can count the reads a gateway completed against the samples it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil_tests.sim.layout import MARKER_ADDRESS, plant_tags
from hil_tests.sim.serving import run, serve_until_stopped, start_modbus

BITS = 16
# which image a request reads or writes, by function code (5, 6, 15, 16, 23 re-read after a write)
FUNCTION_TABLES = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
                   16: "holding", 23: "holding", 4: "input"}
MARKER_WRITES = (6, 16)  # write single register, write multiple registers


class Tank:
    """Storage tank T-101: a feed pump fills it, a steady draw empties it.

    The pump stops at a level drawn anew every fill (sometimes past the H and HH limits), the
    temperature now and then runs away towards 105-128 °C for a while (crossing H, sometimes HH), and
    the pressure follows the temperature, so alarm rules have something to do.
    """

    TAGS = ("LT101", "TT101", "PT101", "FT101", "FT102", "AT101", "XV101", "LSHH101", "P101")
    LEVEL_PER_FLOW = 0.03 / 18.0  # m/s of level per m³/h of net inflow: a fill takes minutes, not hours
    PUMP_START = 2.0

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.level, self.temperature, self.gas = 5.0, 60.0, 0.5
        self.inflow = self.outflow = 0.0
        self.pump, self.stop_level = True, 8.0
        self.excursion_left, self.excursion_target = 0.0, 60.0
        self.leak_left, self.leak_target = 0.0, 0.5

    def step(self, dt: float) -> dict[str, float]:
        rng = self.rng
        self.inflow = max(0.0, 30.0 + rng.normal(0.0, 1.0)) if self.pump else 0.0
        self.outflow = max(0.0, 12.0 + rng.normal(0.0, 0.5))
        self.level = float(np.clip(self.level + (self.inflow - self.outflow) * self.LEVEL_PER_FLOW * dt, 0.0, 10.0))
        if self.pump and self.level >= self.stop_level:
            self.pump = False
        elif not self.pump and self.level <= self.PUMP_START:
            self.pump, self.stop_level = True, rng.uniform(7.6, 9.6)

        if self.excursion_left <= 0 and rng.random() < 0.01 * dt:
            self.excursion_left, self.excursion_target = rng.uniform(20.0, 60.0), rng.uniform(105.0, 128.0)
        self.excursion_left -= dt
        target = self.excursion_target if self.excursion_left > 0 else 60.0
        self.temperature += (target - self.temperature) * min(1.0, 0.05 * dt) + rng.normal(0.0, 0.3 * np.sqrt(dt))
        pressure = 0.3 + 0.011 * self.temperature + rng.normal(0.0, 0.01)

        if self.leak_left <= 0 and rng.random() < 0.002 * dt:
            self.leak_left, self.leak_target = rng.uniform(10.0, 30.0), rng.uniform(25.0, 45.0)
        self.leak_left -= dt
        target = self.leak_target if self.leak_left > 0 else 0.5
        self.gas += (target - self.gas) * min(1.0, 0.2 * dt) + rng.normal(0.0, 0.1)
        self.gas = float(np.clip(self.gas, 0.0, 100.0))

        return {"LT101": self.level, "TT101": self.temperature, "PT101": float(np.clip(pressure, 0.0, 2.5)),
                "FT101": self.inflow, "FT102": self.outflow, "AT101": self.gas,
                "XV101": float(self.pump), "LSHH101": float(self.level > 9.2), "P101": float(self.pump)}


class RegisterImages:
    """Encodes engineering values into one uint16 image per table, grouped by type so it is vectorised.

    Coil and discrete images hold 16 bits per register, bit 0 first, the way the pymodbus simulator
    stores them. Only the types the layout uses are supported.
    """

    def __init__(self, tags: Sequence[dict[str, Any]]) -> None:
        sizes = {"holding": MARKER_ADDRESS + 1, "input": 1, "coil": BITS, "discrete": BITS}
        groups: dict[tuple[str, str], list[int]] = {}
        for index, tag in enumerate(tags):
            width = 2 if tag["type"] == "float32" else 1
            sizes[tag["table"]] = max(sizes[tag["table"]], tag["address"] + width)
            groups.setdefault((tag["table"], tag["type"]), []).append(index)
        for table in ("coil", "discrete"):
            sizes[table] = -(-sizes[table] // BITS)
        self.images = {table: np.zeros(size, dtype=np.uint16) for table, size in sizes.items()}
        self.groups = {key: (np.array(indexes), np.array([tags[i]["address"] for i in indexes]))
                       for key, indexes in groups.items()}
        self.scale = np.array([tag.get("scale", 1.0) for tag in tags])
        self.offset = np.array([tag.get("offset", 0.0) for tag in tags])
        self.bit = np.array([tag.get("bit", 0) for tag in tags], dtype=np.uint16)
        self.coil_bits = np.zeros(sizes["coil"] * BITS, dtype=bool)

    def encode(self, values: np.ndarray) -> None:
        for (table, dtype), (indexes, addresses) in self.groups.items():
            image = self.images[table]
            if dtype == "float32":
                words = values[indexes].astype(">f4").view(">u2").reshape(-1, 2)
                image[addresses], image[addresses + 1] = words[:, 0], words[:, 1]
            elif dtype == "int16":
                raw = np.round((values[indexes] - self.offset[indexes]) / self.scale[indexes])
                image[addresses] = np.clip(raw, -32768, 32767).astype(np.int16).view(np.uint16)
            elif dtype == "bit":
                masks = np.left_shift(1, self.bit[indexes]).astype(np.uint16)
                np.bitwise_and.at(image, addresses, ~masks)
                np.bitwise_or.at(image, addresses, np.where(values[indexes] > 0.5, masks, 0).astype(np.uint16))
            elif dtype == "bool" and table == "coil":
                self.coil_bits[addresses] = values[indexes] > 0.5
                image[:] = np.packbits(self.coil_bits, bitorder="little").view("<u2")
            else:
                raise ValueError(f"the simulator does not encode {dtype} in {table}")


class SimulatedPlc:
    """The plant model, its register images, and the pymodbus device that serves them."""

    def __init__(self, tags: Sequence[dict[str, Any]], seed: int | None, overrides: bool = False) -> None:
        self.overrides = overrides
        self.served: list[tuple[float, int, int, int]] = []  # (time, function, address, count) of each read
        self.forced: dict[int, int] = {}  # holding address -> raw value written by a test (--overrides)
        self.rng = np.random.default_rng(seed)
        self.tank = Tank(self.rng)
        self.tank_rows = {tag["name"]: index for index, tag in enumerate(tags) if tag["name"] in Tank.TAGS}
        generic = np.array([index for index, tag in enumerate(tags) if index not in self.tank_rows.values()],
                           dtype=np.intp)
        low = np.array([tag["range"][0] for tag in tags], dtype=np.float64)
        high = np.array([tag["range"][1] for tag in tags], dtype=np.float64)
        self.generic, self.low, self.span = generic, low[generic], (high - low)[generic]
        self.values = np.zeros(len(tags), dtype=np.float64)
        self.values[generic] = self.low + self.span * self.rng.uniform(0.2, 0.8, len(generic))
        self.images = RegisterImages(tags)
        self.step(0.0)

    def step(self, dt: float) -> None:
        """Advance the model by dt seconds and re-encode every register."""
        for name, value in self.tank.step(dt).items():
            if name in self.tank_rows:
                self.values[self.tank_rows[name]] = value
        walk = self.rng.normal(0.0, 0.002 * np.sqrt(max(dt, 0.0)), len(self.generic)) * self.span
        self.values[self.generic] = np.clip(self.values[self.generic] + walk, self.low, self.low + self.span)
        self.images.encode(self.values)
        self._apply_forced()

    def _apply_forced(self) -> None:
        holding = self.images.images["holding"]
        for address, raw in self.forced.items():
            holding[address] = raw

    def device(self, device_id: int) -> SimDevice:
        """A pymodbus device whose every register of each image is readable, holes included."""
        images = self.images.images
        bits = [SimData(0, values=[False] * (len(images[t]) * BITS), datatype=DataType.BITS)
                for t in ("coil", "discrete")]
        registers = [SimData(0, values=[0] * len(images[t]), datatype=DataType.REGISTERS) for t in ("holding", "input")]
        return SimDevice(device_id, simdata=([bits[0]], [bits[1]], [registers[0]], [registers[1]]),
                         action=self.on_request)

    async def on_request(self, function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus request hook: refuse writes other than MARKER, refresh the slice being read.

        For coil and discrete requests `address` is a bit address and `count` counts 16-bit registers.
        """
        table = FUNCTION_TABLES.get(function_code)
        if set_values is not None:
            if self.overrides and function_code in MARKER_WRITES \
                    and address + len(set_values) <= len(self.images.images["holding"]):
                self.forced.update((address + k, int(raw)) for k, raw in enumerate(set_values))
                self._apply_forced()
                return None
            if function_code not in MARKER_WRITES or address != MARKER_ADDRESS or len(set_values) != 1:
                return ExcCodes.ILLEGAL_ADDRESS
            self.images.images["holding"][MARKER_ADDRESS] = int(set_values[0])
            return None
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        first = (address // BITS if table in ("coil", "discrete") else address) - start_address
        registers[first:first + count] = self.images.images[table][first:first + count].tolist()
        self.served.append((time.time(), function_code, address, count))
        return None

    async def run_model(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.step(period)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.plc", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--tags", type=int, required=True, help="number of tags of layout.plant_tags")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device-id", type=int, default=1, help="Modbus unit id to answer")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between model steps")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument("--overrides", action="store_true",
                        help="tests only: accept writes to any holding register and hold the written value")
    parser.add_argument("--served", type=Path, default=None,
                        help="tests only: write every read answered to this file (JSON) at exit")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    plc = SimulatedPlc(plant_tags(args.tags), args.seed, args.overrides)
    server = ModbusTcpServer(plc.device(args.device_id), address=(args.host, args.port))
    if not await start_modbus(server, args.host, args.port):
        return 1

    async def shutdown() -> None:
        await server.shutdown()
        if args.served is not None:
            args.served.write_text(json.dumps(plc.served))

    return await serve_until_stopped(server.transport.sockets[0].getsockname()[1], shutdown,
                                     plc.run_model(args.period))


def main(argv: Sequence[str] | None = None) -> int:
    return run(serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
