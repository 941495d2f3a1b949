"""OPC UA driver throughput: 10,000 monitored items on the simulated server, every value changing.

    python -m bench.bench_opcua [--items 10000] [--seconds 20] [--period 1.0]

The server (its own process) changes every variable each period; the driver (this process, uvloop)
subscribes to all of them and writes into a point table. Prints one JSON line: values per second
that reached the point table, CPU seconds of the driver per million values, the server's CPU share,
and how long the first full set of values took to arrive (connect + subscribe + initial values).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import uvloop
import yaml

from bench.common import cpu_seconds, emit
from drivers.opcua.client import OpcUaDriver
from gatewayd.config.load import parse_config
from gatewayd.values.points import PointTable

ROOT = Path(__file__).resolve().parents[1]


def start_server(items: int, period: float) -> tuple[subprocess.Popen, int]:
    argv = [sys.executable, "-m", "hil_tests.sim.opcua_server", "--port", "0", "--vars", str(items),
            "--period", str(period), "--seed", "1"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"OPC UA simulator did not start: {line!r}")
    return process, int(line.split()[1])


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def device(port: int, items: int, **settings):
    """A device of `items` subscribed GEN tags with `settings` (rates) through the real config loader."""
    tags = [{"name": f"G{i}", "node": f"ns=2;s=GEN{i:05d}"} for i in range(items)]
    document = {"gateway": {"id": "bench"},
                "devices": [{"name": "ua", "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}",
                             "security_policy": "None", "timeout": 10, **settings, "tags": tags}],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    config = parse_config(yaml.safe_dump(document), ROOT / "bench.yaml")
    return config, config.devices[0]


async def measure(port: int, items: int, seconds: float, publishing: float, server_pid: int) -> dict:
    config, dev = device(port, items, publishing_interval=publishing, keepalive_count=10)
    table = PointTable(config.tags)
    driver = OpcUaDriver.from_config(dev, np.arange(items))
    started = time.monotonic()
    task = asyncio.create_task(driver.run(table))
    try:
        while driver.stats.values < items:
            if time.monotonic() - started > 120:
                raise RuntimeError(f"only {driver.stats.values} of {items} initial values after 120 s")
            await asyncio.sleep(0.05)
        first_full = time.monotonic() - started
        stats = driver.stats
        values0, cpu0, server0, wall0 = stats.values, time.process_time(), cpu_seconds(server_pid), time.monotonic()
        await asyncio.sleep(seconds)
        values, cpu, server_cpu, wall = (driver.stats.values - values0, time.process_time() - cpu0,
                                         cpu_seconds(server_pid) - server0, time.monotonic() - wall0)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    good = int((table.quality == 0).sum())
    per_million = round(cpu / values * 1e6, 2) if values else None
    return {"items": items, "seconds": round(wall, 1), "values": values, "values_per_second": round(values / wall),
            "driver_cpu_s_per_million_values": per_million, "driver_cpu_share": round(cpu / wall, 3),
            "server_cpu_share": round(server_cpu / wall, 3), "first_full_set_s": round(first_full, 2),
            "good_tags": good, "failures": driver.stats.failures}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_opcua", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between value changes on the server")
    args = parser.parse_args(argv)
    process, port = start_server(args.items, args.period)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(measure(port, args.items, args.seconds, args.period / 2, process.pid))
    finally:
        stop_server(process)
    emit("opcua_subscription", **figures, cpus=os.cpu_count())
    return 0


if __name__ == "__main__":
    sys.exit(main())
