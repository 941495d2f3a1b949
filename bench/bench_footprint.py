"""Where the daemon's CPU time and memory go (issue 18): prints JSON lines.

    python -m bench.bench_footprint                       # every part, this checkout
    python -m bench.bench_footprint --compare /work/main  # the daemon parts also from another checkout,
                                                          # side by side in the same run
    python -m bench.bench_footprint --parts cpu stages    # some parts only

Parts:
- `cpu`: the real daemon against `hil_tests.sim.counters` (one Modbus TCP unit, 10,000 uint16 holding
  registers that all change every second, polled every second) and a local mosquitto: every value is
  forwarded, the store is on disk (the temporary directory, never tmpfs here) with durability as
  shipped, batches signed. Once with report-by-exception (deadband 0), once with `report: every_read`.
  CPU seconds (user + system, from /proc) per million values: the samples the daemon committed in
  the window (its outbox's row counter) or, if more, those a subscriber received (every value read is
  forwarded; a poll that overran its second on a loaded machine reads fewer, and counting what should
  have been polled would flatter the figure).
- `stages`: the same tick in this process, stage by stage with the real classes (decode of the 80
  planned blocks, the point-table write, the scan tick, the store append, the batch read from the store,
  body JSON, zlib, Ed25519, the batch stored, the publish to mosquitto with its PUBACK, the delete on
  acknowledgement): process CPU seconds per million values each.
- `poll`: the Modbus driver alone, in this process, polling the counters unit into a point table for
  `--seconds`: CPU seconds per million values of the whole poll, socket I/O and event loop included,
  which `stages` leaves out (its `poll_decode` and `point_write` are the same poll without them).
- `memory`: resident memory of the daemon at 10,000 tags with rules in use (Modbus only: limit alarms
  on 1,000 tags and 100 expression rules), polling the counters, and its peak (VmHWM) over a minute
  more, which holds a history compaction; and of the demo config with every driver kind (its devices
  on ports where nothing answers).
- `imports`: CPU seconds and resident MiB each heavy dependency costs when imported into a bare
  interpreter (numpy counted inside numba's figure; `over_numpy` is numba's share alone).
- `start`: start to READY of the 3.5 MiB rules config (bench.bench_rules) with warm caches.

The machine may be shared: figures are process CPU time, not wall time, and variants run back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from bench.common import CLOCK_TICKS, emit, rss_mib
from hil_tests.storerows import rows_committed as rows_committed_since_blocks

ROOT = Path(__file__).resolve().parent.parent
REGISTERS = 10_000
COMPACTION_WINDOW = 60.0  # seconds more for the peak: at 10,000 values a second history compacts every 55 s
HEAVY_IMPORTS = ("numpy", "numba", "llvmlite.binding", "asyncua", "pymodbus", "prometheus_client", "paho.mqtt.client",
                 "cryptography.hazmat.primitives.asymmetric.ed25519", "uvloop", "gatewayd.daemon")


class SampleCounter:
    """Subscribes like the platform and counts the samples of every batch."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        from core.batchformat import parse_envelope

        self._parse = parse_envelope
        self.samples = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda client, *_: client.subscribe("gatewayd/+/batch", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(zlib.decompress(self._parse(message.payload).body))
        with self._lock:
            self.samples += len(body["samples"]["tag"])

    def count(self) -> int:
        with self._lock:
            return self.samples

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (system: the kernel's share, fsync and sockets)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rows_committed(database: Path) -> int:
    """Samples and events the daemon has committed so far (the store's `outbox_committed`), read beside it (WAL);
    a checkout from before blocks (`--compare`) counted one outbox row per value, in its AUTOINCREMENT counter."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return rows_committed_since_blocks(conn)
        except sqlite3.OperationalError:
            found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            return found[0] if found else 0


def counter_tags(count: int, report: str) -> list[dict[str, Any]]:
    """uint16 holding registers 0..count-1, every change reported (deadband 0)."""
    extra = {"deadband": 0.0} if report == "exception" else {}
    return [{"name": f"R{address:05d}", "table": "holding", "address": address, "type": "uint16",
             "range": [0, 65535], "report": report, **extra} for address in range(count)]


def counters_config(workdir: Path, plc_port: int, broker_port: int, report: str, rules: bool = False) -> Path:
    from hil_tests.harness import make_key

    key, _ = make_key(workdir)
    tags = counter_tags(REGISTERS, report)
    config: dict[str, Any] = {
        "gateway": {"id": "GW-BENCH-FOOTPRINT", "state_dir": str(workdir / "state"),
                    "cache_dir": str(workdir / "cache"), "runtime_dir": str(workdir / "run")},
        "devices": [{"name": "counters", "driver": "modbus_tcp", "host": "127.0.0.1", "port": plc_port,
                     "poll_interval": 1.0, "timeout": 1.0, "tags": tags}],
        "uplink": {"host": "127.0.0.1", "port": broker_port, "transport": "plain", "signing_key": str(key)},
    }
    if rules:
        for tag in tags[:1000]:
            tag["alarms"] = {"hh": 60000, "h": 50000, "l": 1000, "deadband": 10, "priority": "high"}
        config["rules"] = {"alarms": [{"id": f"EXPR{k:03d}", "when": f"R{k:05d} > R{k + 1:05d} + 100",
                                       "for": "5s"} for k in range(100)]}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_counters(workdir: Path):
    """The counters unit (REGISTERS holding registers) on a free port, answering: (its process, the port)."""
    from hil_tests.harness import Process, free_port, stop_all, wait_for_port

    port = free_port()
    plc = Process("counters", [sys.executable, "-m", "hil_tests.sim.counters", "--port", str(port),
                               "--registers", str(REGISTERS)], workdir / "counters.log", cwd=ROOT).start()
    try:
        wait_for_port(port, timeout=30)
    except BaseException:
        stop_all(plc)
        raise
    return plc, port


def start_daemon(workdir: Path, config: Path, checkout: Path):
    """The daemon from `checkout`'s sources (`python -m gatewayd` resolves in its working directory)."""
    from hil_tests.harness import Daemon

    daemon = Daemon(workdir, config, log_level="warning")
    daemon.cwd = checkout
    return daemon.start()


def cpu_run(checkout: Path, report: str, seconds: float, warmup: float) -> None:
    from hil_tests.harness import Broker, stop_all

    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-footprint-") as tmp:
        workdir = Path(tmp)
        broker = plc = daemon = counter = None
        try:
            broker = Broker(workdir).start()
            plc, port = start_counters(workdir)
            counter = SampleCounter(broker.port)
            daemon = start_daemon(workdir, counters_config(workdir, port, broker.port, report), checkout)
            time.sleep(warmup)
            pid = daemon.proc.pid
            database = workdir / "state" / "gatewayd.db"
            user0, system0 = user_system_seconds(pid)
            wall0, received0, stored0 = time.monotonic(), counter.count(), rows_committed(database)
            time.sleep(seconds)
            user, system = (now - before for now, before in zip(user_system_seconds(pid), (user0, system0)))
            wall, received = time.monotonic() - wall0, counter.count() - received0
            stored = rows_committed(database) - stored0
            cpu = user + system
            emit("footprint_cpu", checkout=str(checkout), report=report, tags=REGISTERS, window_s=round(wall, 1),
                 cpu_s=round(cpu, 2), user_s=round(user, 2), system_s=round(system, 2),
                 cpu_share_of_one_core=round(cpu / wall, 4),
                 cpu_s_per_million_values=round(cpu / max(received, stored, 1) * 1e6, 2),
                 values_stored_per_s=round(stored / wall), values_forwarded_per_s=round(received / wall),
                 rss_mib=round(rss_mib(pid), 1), target_cpu_s_per_million=2.5)
        finally:
            if counter is not None:
                counter.stop()
            stop_all(daemon, plc, broker)


def poll_run(seconds: float) -> None:
    import asyncio

    import uvloop

    from gatewayd.assembly import build_driver, device_sink
    from gatewayd.config import load_config
    from gatewayd.values.points import PointTable
    from hil_tests.harness import stop_all

    async def measure(device) -> tuple[float, int, int]:
        table = PointTable(device.tags)
        driver = build_driver(device)
        polling = asyncio.create_task(driver.run(device_sink(device, table)))
        try:
            await asyncio.sleep(3.0)  # connected, first polls done
            cpu, polls = time.process_time(), driver.stats.polls
            await asyncio.sleep(seconds)
            return time.process_time() - cpu, driver.stats.polls - polls, driver.stats.requests_per_poll
        finally:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)

    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-footprint-") as tmp:
        workdir = Path(tmp)
        plc, port = start_counters(workdir)
        try:
            device = load_config(counters_config(workdir, port, 1, "exception")).devices[0]
            cpu, polls, requests = uvloop.run(measure(device))
            emit("footprint_poll", tags=REGISTERS, polls=polls, requests_per_poll=requests, cpu_s=round(cpu, 3),
                 cpu_s_per_million_values=round(cpu / max(polls * REGISTERS, 1) * 1e6, 3))
        finally:
            stop_all(plc)


def memory_run(checkout: Path, seconds: float) -> None:
    from hil_tests.harness import Broker, stop_all

    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-footprint-") as tmp:
        workdir = Path(tmp)
        broker = plc = daemon = None
        try:
            broker = Broker(workdir).start()
            plc, port = start_counters(workdir)
            daemon = start_daemon(workdir, counters_config(workdir, port, broker.port, "exception", rules=True),
                                  checkout)
            time.sleep(seconds)
            rss = rss_mib(daemon.proc.pid)
            time.sleep(COMPACTION_WINDOW)
            emit("footprint_rss", checkout=str(checkout), config="10,000 Modbus tags, 1,000 with limit alarms, "
                 "100 expression rules", rss_mib=round(rss, 1), after_s=seconds,
                 peak_mib=round(peak_rss_mib(daemon.proc.pid), 1), peak_over_s=seconds + COMPACTION_WINDOW,
                 target_mib=150)
        finally:
            stop_all(daemon, plc, broker)
        try:
            broker = Broker(workdir / "every-kind").start()
            daemon = start_daemon(workdir / "every-kind",
                                  every_kind_config(workdir / "every-kind", broker.port, checkout), checkout)
            time.sleep(seconds)
            emit("footprint_rss", checkout=str(checkout), config="config.example.yaml: every driver kind",
                 rss_mib=round(rss_mib(daemon.proc.pid), 1), after_s=seconds)
        finally:
            stop_all(daemon, broker)


def peak_rss_mib(pid: int) -> float:
    """The most resident memory the process has had (VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))


def every_kind_config(workdir: Path, broker_port: int, checkout: Path = ROOT) -> Path:
    """`checkout`'s config.example.yaml (its keys are those that daemon knows) with its devices on free
    ports (nothing answers) and its paths in `workdir`."""
    from hil_tests.harness import free_port, make_key

    key, _ = make_key(workdir)
    config = yaml.safe_load((checkout / "config.example.yaml").read_text(encoding="utf-8"))
    config["gateway"].update(state_dir=str(workdir / "state"), cache_dir=str(workdir / "cache"),
                             runtime_dir=str(workdir / "run"))
    for device in config["devices"]:
        if isinstance(device.get("port"), int):
            device["port"] = broker_port if device["driver"] == "mqtt" else free_port()
        if device["driver"] == "modbus_rtu":
            device["port"] = str(workdir / "no-such-tty")
        if "url" in device:
            device["url"] = f"ws://127.0.0.1:{free_port()}/feed"
        if "endpoint" in device:
            device["endpoint"] = f"opc.tcp://127.0.0.1:{free_port()}/"
    config["uplink"].update(port=broker_port, signing_key=str(key))
    config.pop("metrics", None)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def import_cost(module: str) -> dict[str, float]:
    """CPU seconds and resident MiB of importing `module` into a fresh interpreter."""
    script = ("import json, sys, time\n"
              "def rss():\n"
              "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024\n"
              "r, c = rss(), time.process_time()\n"
              f"import {module}\n"
              "cpu, mib = time.process_time() - c, rss() - r\n"
              "print(json.dumps({'cpu_s': cpu, 'rss_mib': mib, 'modules': len(sys.modules)}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def imports() -> None:
    numpy = import_cost("numpy")
    for module in HEAVY_IMPORTS:
        figures = import_cost(module)
        extra = {"over_numpy_rss_mib": round(figures["rss_mib"] - numpy["rss_mib"], 1)} if module == "numba" else {}
        emit("footprint_import", module=module, cpu_s=round(figures["cpu_s"], 3),
             rss_mib=round(figures["rss_mib"], 1), modules=figures["modules"], **extra)


def start(checkout: Path) -> None:
    from bench.bench_rules import daemon_ready_seconds, write_config

    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-footprint-") as tmp:
        workdir = Path(tmp)
        config = write_config(workdir, 25_000, 10_000, 1_000)
        (workdir / "cache").mkdir()
        cache = str(workdir / "numba")
        daemon_ready_seconds(config, workdir, cache, cwd=checkout)  # cold: fills both caches
        for _ in range(2):
            seconds, rss, _, cpu = daemon_ready_seconds(config, workdir, cache, cwd=checkout)
            emit("footprint_start", checkout=str(checkout), caches="warm",
                 config_mib=round(config.stat().st_size / 2**20, 1), seconds_to_ready=round(seconds, 3),
                 cpu_s_to_ready=round(cpu, 3), rss_mib_at_ready=round(rss, 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["imports", "stages", "poll", "cpu", "memory", "start"],
                        choices=["imports", "stages", "poll", "cpu", "memory", "start"])
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="other checkouts whose daemon runs beside this one's (e.g. main before a change)")
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU measurement window")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--reports", nargs="+", default=["exception", "every_read"])
    args = parser.parse_args(argv)
    checkouts = [*args.compare, ROOT]
    if "imports" in args.parts:
        imports()
    if "stages" in args.parts:
        from bench.bench_stages import main as stages

        stages([])
    if "poll" in args.parts:
        poll_run(min(args.seconds, 30.0))
    for report in args.reports if "cpu" in args.parts else ():
        for checkout in checkouts:
            cpu_run(checkout, report, args.seconds, args.warmup)
    for checkout in checkouts if "memory" in args.parts else ():
        memory_run(checkout, args.warmup + 5)
    for checkout in checkouts if "start" in args.parts else ():
        start(checkout)


if __name__ == "__main__":
    main()
