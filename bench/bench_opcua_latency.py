"""OPC UA value age: how long after its source time a value reaches the gateway, by subscription rates.

    python -m bench.bench_opcua_latency [--items 200] [--seconds 30] [--period 1.13]

The simulated server (its own process) changes every variable every `period` seconds and stamps
each value with its source time (a period that is no multiple of the publishing interval, so that
changes fall at every phase of the publishing cycle, as a plant's do); the driver subscribes to
all of them, once with the rates of the old default
(publishing and sampling 1 s) and once with today's defaults (nothing set: sampling 1 s, publishing
500 ms). The age of a value is the wall-clock time its publish arrived minus its source timestamp.
One JSON line per case: median, 95th percentile and largest age in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import uvloop

from bench.bench_opcua import device, start_server, stop_server
from bench.common import emit, percentile
from drivers.opcua.client import OpcUaDriver
from core.types import Event

CASES = {"old default (publishing 1 s, sampling 1 s)": {"publishing_interval": 1.0},
         "default (publishing 500 ms, sampling 1 s)": {}}


class AgeSink:
    """Keeps the age of every GOOD value written, in seconds; ignores the rest of the sink's calls."""

    def __init__(self) -> None:
        self.ages: list[float] = []

    def write(self, rows, values, quality=0, source_ts=None, read_at=None) -> None:
        arrived = time.time() - (time.monotonic() - np.asarray(read_at))
        good = np.asarray(quality) == 0
        self.ages.extend((arrived - np.asarray(source_ts))[good].tolist())

    def set_quality(self, rows, quality, read_at=None) -> None:
        pass

    def confirm(self, rows, read_at=None) -> None:
        pass

    def widen_stale_after(self, rows, seconds) -> None:
        pass

    def event(self, event: Event) -> None:
        pass


async def measure(port: int, items: int, seconds: float, rates: dict[str, Any]) -> dict:
    _, dev = device(port, items, **rates)
    sink = AgeSink()
    driver = OpcUaDriver.from_config(dev, np.arange(items))
    task = asyncio.create_task(driver.run(sink))
    try:
        await asyncio.sleep(3.0)  # connect, subscribe, initial values (old, so not counted)
        sink.ages.clear()
        await asyncio.sleep(seconds)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    ages = [age * 1000 for age in sink.ages]
    settings = dev.settings
    return {"publishing_ms": settings.publishing_interval * 1000, "sampling_ms": settings.sampling_interval * 1000,
            "values": len(ages), "age_median_ms": round(percentile(ages, 0.5)),
            "age_p95_ms": round(percentile(ages, 0.95)), "age_max_ms": round(max(ages)),
            "failures": driver.stats.failures}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_opcua_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=1.13, help="seconds between value changes on the server")
    args = parser.parse_args(argv)
    process, port = start_server(args.items, args.period)
    try:
        for case, rates in CASES.items():
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                figures = runner.run(measure(port, args.items, args.seconds, rates))
            emit("opcua_value_age", case=case, items=args.items, change_period_s=args.period, **figures,
                 cpus=os.cpu_count())
    finally:
        stop_server(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
