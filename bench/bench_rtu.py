"""Bus utilisation of the Modbus RTU driver: values per second against the wire limit of the line.

    python -m bench.bench_rtu [--seconds S]

For 9,600 and 115,200 baud (8N2, 11 bits a character), simulated slaves on a socat pseudo-terminal
pair pace every reply as the wire would (request and reply bytes x 11 bits / baud, plus the silence
that ends the request). The driver polls two slaves of 250 uint16 values (two full 125-register
blocks each) as fast as the bus lets it. The wire limit is what a perfect master could reach on the
same line: per transaction the request (8 bytes), the reply (5 + 250 bytes) and two inter-frame
silences (3.5 characters, 1.75 ms above 19,200 baud), and nothing else. One JSON line per baud rate:
values per second achieved, the limit, their ratio (target at least 0.85), and requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import emit
from drivers.modbus.rtu import ModbusRtuBusDriver
from drivers.modbus.rtu_frame import REQUEST_LENGTH, reply_length
from gatewayd.config.load import parse_config
from hil_tests.sim.rtu_bus import BITS_PER_CHAR, SerialPair

UNITS = (1, 2)
BLOCK = 125
BLOCKS_PER_SLAVE = 2


class CountingSink:
    def __init__(self) -> None:
        self.values = 0

    def write(self, rows, values, quality=0, source_ts=None, read_at=None) -> None:
        self.values += len(values)

    def set_quality(self, rows, quality, read_at=None) -> None:
        pass

    def event(self, event) -> None:
        pass


def bus_device(port: Path, baud: int):
    slaves = [{"unit_id": unit, "tags": [{"name": f"U{unit}_{address}", "address": address}
                                         for address in range(BLOCK * BLOCKS_PER_SLAVE)]} for unit in UNITS]
    device = {"name": "bus", "driver": "modbus_rtu", "port": str(port), "baud": baud, "stop_bits": 2,
              "poll_interval": "1ms", "timeout": 2.0, "max_gap": 0, "slaves": slaves}
    document = {"gateway": {"id": "bench"}, "devices": [device],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "k"}}
    return parse_config(yaml.safe_dump(document), Path("bench-rtu.yaml")).devices[0]


def wire_limit(baud: int, silence: float) -> float:
    """Values per second a perfect master reaches with full 125-register blocks."""
    characters = REQUEST_LENGTH + reply_length("holding", BLOCK)
    return BLOCK / (characters * BITS_PER_CHAR / baud + 2 * silence)


async def measure(device, seconds: float) -> tuple[float, float]:
    driver = ModbusRtuBusDriver.from_config(device, np.arange(len(device.tags)))
    sink = CountingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        while not all(slave.stats.polls for slave in driver.slaves):
            await asyncio.sleep(0.01)
        values, requests = sink.values, driver.stats.polls * BLOCKS_PER_SLAVE
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        return (sink.values - values) / elapsed, (driver.stats.polls * BLOCKS_PER_SLAVE - requests) / elapsed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def run(baud: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rtu-") as workdir:
        pair = SerialPair(Path(workdir), UNITS, baud=baud).start()
        try:
            device = bus_device(pair.master, baud)
            achieved, requests = asyncio.run(measure(device, seconds))
        finally:
            pair.close()
    limit = wire_limit(baud, device.settings.frame_silence)
    emit("rtu_bus_utilisation", baud=baud, framing="8N2", values_per_request=BLOCK,
         values_per_second=round(achieved, 1), wire_limit_values_per_second=round(limit, 1),
         utilisation=round(achieved / limit, 3), requests_per_second=round(requests, 2), seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rtu", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per baud rate")
    args = parser.parse_args(argv)
    for baud in (9600, 115200):
        run(baud, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
