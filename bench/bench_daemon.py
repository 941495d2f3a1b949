"""The daemon as a process against the simulated PLC and mosquitto on loopback.

Figures: CPU share of one core and CPU seconds per million values polled, resident memory at the
start and end of the window (growth), requests per poll against the fewest possible, and end-to-end
latency from a register write in the simulator to the batch carrying it at a subscriber.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient

from bench.common import cpu_seconds, emit, percentile, rss_mib
from drivers.modbus.plan import plan_blocks
from gatewayd.config import load_config
from core.batchformat import parse_envelope
from hil_tests.harness import Broker, Daemon, Simulator, plant_config, stop_all
from hil_tests.sim.layout import MARKER_ADDRESS


class MarkerWatch:
    """Subscribes like the platform and notes when each MARKER value first arrives."""

    def __init__(self, port: int):
        self.arrived: dict[int, float] = {}
        self.batches = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda client, *_: client.subscribe("gatewayd/+/batch", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        body = json.loads(zlib.decompress(parse_envelope(message.payload).body))
        with self._lock:
            self.batches += 1
            if "MARKER" not in body["tags"]:
                return
            marker = body["tags"].index("MARKER")
            for index, value in zip(body["samples"]["tag"], body["samples"]["value"]):
                if index == marker and value is not None:
                    self.arrived.setdefault(int(value), now)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def requests_per_poll(config_path: Path) -> tuple[int, int]:
    device = load_config(config_path).devices[0]
    addresses = [tag.address for tag in device.tags]
    planned = len(plan_blocks(addresses, device.settings.max_gap, device.settings.max_block))
    unlimited_gap = 1 << 16  # a gap budget as wide as the address space: the fewest reads possible
    return planned, len(plan_blocks(addresses, unlimited_gap, device.settings.max_block))


def run(tags: int, seconds: float, warmup: float, poll_interval: float, history: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = plc = daemon = watch = None
        try:
            broker = Broker(workdir).start()
            plc = Simulator(workdir, tags).start()
            config = plant_config(workdir, gateway_id="GW-BENCH", plc_port=plc.port, broker_port=broker.port,
                                  tags=tags, poll_interval=poll_interval, marker=True,
                                  history=None if history else {"keep": 0})
            watch = MarkerWatch(broker.port)
            daemon = Daemon(workdir, config, log_level="warning").start()
            time.sleep(warmup)
            pid = daemon.proc.pid
            rss_start, cpu_start, wall_start = rss_mib(pid), cpu_seconds(pid), time.monotonic()
            written = write_markers(plc.port, seconds)
            cpu, wall = cpu_seconds(pid) - cpu_start, time.monotonic() - wall_start
            rss_end = rss_mib(pid)
            time.sleep(2 * poll_interval + 1)
            latencies = [(watch.arrived[value] - sent) * 1000 for value, sent in written.items()
                         if value in watch.arrived]
            planned, minimum = requests_per_poll(config)
            values = (tags + 1) * wall / poll_interval
            emit("daemon", tags=tags, history=history, poll_interval_s=poll_interval, window_s=round(wall, 1),
                 cpu_share_of_one_core=round(cpu / wall, 4),
                 cpu_s_per_million_values=round(cpu / values * 1e6, 2),
                 values_per_s=round(values / wall), rss_mib_start=round(rss_start, 1),
                 rss_mib_end=round(rss_end, 1), rss_growth_mib=round(rss_end - rss_start, 2),
                 requests_per_poll=planned, minimum_requests_per_poll=minimum,
                 latency_samples=len(latencies), latency_lost=len(written) - len(latencies),
                 latency_p50_ms=round(percentile(latencies, 0.5), 1) if latencies else None,
                 latency_p99_ms=round(percentile(latencies, 0.99), 1) if latencies else None,
                 batches=watch.batches)
        finally:
            if watch is not None:
                watch.stop()
            stop_all(daemon, plc, broker)


def write_markers(port: int, seconds: float) -> dict[int, float]:
    """Write a new MARKER value at random moments, so the writes fall at every phase of the poll.

    Writes are further apart than the poll interval, so that no value is overwritten unseen.
    """
    client = ModbusTcpClient("127.0.0.1", port=port)
    client.connect()
    written: dict[int, float] = {}
    deadline = time.monotonic() + seconds
    value = 1
    try:
        while time.monotonic() < deadline:
            client.write_register(MARKER_ADDRESS, value, device_id=1)
            written[value] = time.monotonic()
            value += 1
            time.sleep(random.uniform(1.1, 2.1))
    finally:
        client.close()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window (600 for the memory target)")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--no-history", action="store_true", help="history.keep 0: the cost of keeping history")
    args = parser.parse_args(argv)
    for tags in args.tags:
        run(tags, args.seconds, args.warmup, args.poll_interval, history=not args.no_history)


if __name__ == "__main__":
    main()
