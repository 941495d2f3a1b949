"""MQTT southbound throughput: 10,000 tags, one reading each per second, as JSON and as Sparkplug B.

    python -m bench.bench_mqtt [--tags 10000] [--seconds 10] [--profiles json,sparkplug_b]

A real mosquitto; a publisher process (this module with --publish) sends every tag's reading once a
second, QoS 0: JSON one message per tag (`bench/t/<n>`, `{"v": ..., "ts": ms}`), Sparkplug B one
DDATA per device of 100 metrics by alias (after NBIRTH and DBIRTHs). The driver runs in this process
(uvloop) into a point table. Prints one JSON line per profile: readings per second that reached the
table, the driver's CPU share (its paho thread included), readings per CPU second (what one core
could take), CPU seconds per million readings, and the publisher's CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import uvloop
import yaml

from bench.common import cpu_seconds, emit
from drivers.mqtt.driver import MqttDriver
from gatewayd.config.load import parse_config
from gatewayd.values.points import PointTable
from hil_tests.harness import Broker, stop_all
from hil_tests.sim.sparkplug_encode import MetricOut, encode_payload

ROOT = Path(__file__).resolve().parents[1]
METRICS_PER_DEVICE = 100
WARM_UP = 3.0


def tag_configs(profile: str, tags: int) -> list[dict]:
    if profile == "json":
        return [{"name": f"J{n}", "topic": f"bench/t/{n}", "value": "/v", "timestamp": "/ts",
                 "timestamp_format": "ms"} for n in range(tags)]
    return [{"name": f"S{n}", "node": "n1", "device": f"d{n // METRICS_PER_DEVICE}",
             "metric": f"m{n % METRICS_PER_DEVICE}"} for n in range(tags)]


def device(port: int, profile: str, tags: int):
    settings = {"subscribe": ["bench/t/+"]} if profile == "json" else {"payload": "sparkplug_b", "group": "bench"}
    document = {"gateway": {"id": "bench"},
                "devices": [{"name": "sensors", "driver": "mqtt", "host": "127.0.0.1", "port": port,
                             "transport": "plain", "qos": 0, "max_messages_per_second": 1_000_000,
                             "queue_limit": 1_000_000, **settings, "tags": tag_configs(profile, tags)}],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    config = parse_config(yaml.safe_dump(document), ROOT / "bench.yaml")
    return config, config.devices[0]


def publish(port: int, profile: str, tags: int) -> None:
    """The publisher process: every tag once a second until killed."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{profile}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    devices = (tags + METRICS_PER_DEVICE - 1) // METRICS_PER_DEVICE
    seq = 0
    if profile == "sparkplug_b":
        client.publish("spBv1.0/bench/NBIRTH/n1", encode_payload([MetricOut("bdSeq", "UInt64", 0)], seq=0))
        for index in range(devices):
            seq += 1
            metrics = [MetricOut(f"m{m}", "Double", 0.0, alias=m) for m in range(METRICS_PER_DEVICE)]
            client.publish(f"spBv1.0/bench/DBIRTH/n1/d{index}", encode_payload(metrics, seq=seq % 256))
    tick = time.monotonic()
    round_ = 0
    while True:
        round_ += 1
        ts = int(time.time() * 1000)
        if profile == "json":
            for n in range(tags):
                client.publish(f"bench/t/{n}", f'{{"v": {n + round_ * 0.5}, "ts": {ts}}}')
        else:
            for index in range(devices):
                seq += 1
                metrics = [MetricOut(None, "Double", index + m + round_ * 0.5, alias=m)
                           for m in range(METRICS_PER_DEVICE)]
                client.publish(f"spBv1.0/bench/DDATA/n1/d{index}", encode_payload(metrics, seq=seq % 256,
                                                                                  timestamp=ts))
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))


async def measure(port: int, profile: str, tags: int, seconds: float) -> dict:
    config, dev = device(port, profile, tags)
    table = PointTable(config.tags)
    driver = MqttDriver.from_config(dev, np.arange(tags))
    task = asyncio.create_task(driver.run(table))
    publisher = None
    try:
        while not driver.connections:
            await asyncio.sleep(0.05)
        # started once subscribed, so the Sparkplug births are seen (a host never asks for them)
        publisher = subprocess.Popen([sys.executable, "-m", "bench.bench_mqtt", "--publish", profile, "--port",
                                      str(port), "--tags", str(tags)], cwd=ROOT)
        publisher_pid = publisher.pid
        await asyncio.sleep(WARM_UP)
        reads0, cpu0, publisher0, wall0 = int(table.reads.sum()), time.process_time(), cpu_seconds(publisher_pid), \
            time.monotonic()
        await asyncio.sleep(seconds)
        readings, cpu = int(table.reads.sum()) - reads0, time.process_time() - cpu0
        publisher_cpu, wall = cpu_seconds(publisher_pid) - publisher0, time.monotonic() - wall0
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return {"tags": tags, "offered_per_second": tags, "seconds": round(wall, 1),
            "readings_per_second": round(readings / wall), "driver_cpu_share": round(cpu / wall, 3),
            "readings_per_cpu_second": round(readings / cpu) if cpu else None,
            "cpu_s_per_million_readings": round(cpu / readings * 1e6, 2) if readings else None,
            "publisher_cpu_share": round(publisher_cpu / wall, 3), "messages_dropped": driver.stats.messages_dropped,
            "decode_errors": driver.stats.decode_errors, "good_tags": int((table.quality == 0).sum())}


def run(profile: str, tags: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as workdir:
        broker = Broker(Path(workdir)).start()
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(measure(broker.port, profile, tags, seconds))
        finally:
            stop_all(broker)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_mqtt", description=__doc__.split("\n")[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profiles", default="json,sparkplug_b")
    parser.add_argument("--publish", choices=("json", "sparkplug_b"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        publish(args.port, args.publish, args.tags)
        return 0
    for profile in args.profiles.split(","):
        emit(f"mqtt_{profile}", **run(profile, args.tags, args.seconds), cpus=os.cpu_count())
    return 0


if __name__ == "__main__":
    sys.exit(main())
