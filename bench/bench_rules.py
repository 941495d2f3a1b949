"""Rules engine benchmark: prints JSON lines.

    python -m bench.bench_rules              # scan times (numba vs reference), engine and daemon start
    python -m bench.bench_rules --quick      # a smaller plant, for a quick look

The plant: 25,000 analog tags with HH/H/L/LL (100,000 limit alarms), 10,000 expression rules over
them, 1,000 interlocks (50 production units) with a bypass status tag and a trip expression each.
Start-up is measured in fresh processes with NUMBA_CACHE_DIR in a temporary directory: cold with an
empty cache, warm with the cache the cold run left.
- `rules_start`: the engine alone, from spawning the process to the end of its first evaluation.
- `daemon_start`: the real daemon (`gatewayd run -c FILE`) on the same plant written as a YAML file,
  from spawning the process to its sd_notify READY=1, which it sends after its first scan: YAML
  parsing and validation, store, engine build, kernel loading and the first scan included. Its
  devices and broker do not answer (nothing listens on their ports), which start-up does not wait for.
  $CACHE_DIRECTORY is set as systemd sets it, so the compiled-config cache (gatewayd.config.cache)
  is used: `config_cache` cold is the first start after an edit (the YAML is parsed), warm a restart
  of an unchanged file; `numba_cache` likewise for the compiled kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STOP_WAIT = 30.0  # seconds a daemon gets to stop on SIGTERM after the measurement


def make_plant(analog: int, expressions: int, interlocks: int, seed: int = 7):
    from rules.expr import parse_expression
    from rules.model import (
        AlarmBehaviour,
        AlarmRule,
        ExpressionSpec,
        Interlock,
        LimitAlarm,
        ProductionUnit,
        RulesConfig,
        TagAlarmConfig,
    )

    names, sources, trips = plant_sources(analog, expressions, interlocks, seed)
    rows = {name: row for row, name in enumerate(names)}
    known = rows.__contains__
    behaviour = AlarmBehaviour(priority="medium", on_delay=5.0, off_delay=2.0)
    limits = tuple(LimitAlarm(level, setpoint, 1.0, behaviour)
                   for level, setpoint in (("HH", 95.0), ("H", 85.0), ("L", 15.0), ("LL", 5.0)))
    tag_alarms = [TagAlarmConfig(names[i], limits) for i in range(analog)]
    rules = [AlarmRule(f"EXPR{k:05d}", ExpressionSpec(parse_expression(source, known)), behaviour)
             for k, source in enumerate(sources)]
    units = tuple(ProductionUnit(f"U{u:02d}", 3) for u in range(50))
    locks = tuple(Interlock(f"SIS-{k:04d}", f"U{k % 50:02d}", 8 * 3600.0, bypass_tags=(f"XS{k:04d}",),
                            trip=parse_expression(trip, known))
                  for k, trip in enumerate(trips))
    config = RulesConfig(alarms=tuple(rules), units=units, interlocks=locks)
    return config, tag_alarms, rows, len(names)


def plant_sources(analog: int, expressions: int, interlocks: int, seed: int = 7):
    """Tag names, expression rule sources and interlock trip sources of the plant."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = [f"AT{i:05d}" for i in range(analog)] + [f"XS{i:04d}" for i in range(interlocks)]
    shapes = ("{a} > {x} and {b} < {y}", "abs({a} - {b}) > {x} or not {c}", "max({a}, {b}) / ({c} + 1) > {y}",
              "{a} > {x} and {b} > {y} and not {c} > 50", "0 < {a} - {b} < {x}")
    sources = []
    for k in range(expressions):
        a, b, c = (names[int(j)] for j in rng.integers(0, analog, 3))
        sources.append(shapes[k % len(shapes)].format(a=a, b=b, c=c, x=int(rng.integers(60, 99)),
                                                      y=int(rng.integers(1, 40))))
    trips = [f"{names[int(rng.integers(0, analog))]} >= 97" for _ in range(interlocks)]
    return names, sources, trips


def write_config(workdir: Path, analog: int, expressions: int, interlocks: int) -> Path:
    """The plant as the YAML an integrator would write, with devices and a broker that do not answer."""
    import yaml

    from hil_tests.harness import free_port, make_key

    key, _ = make_key(workdir)
    names, sources, trips = plant_sources(analog, expressions, interlocks)
    alarms = {"hh": 95, "h": 85, "l": 15, "ll": 5, "deadband": 1, "on_delay": "5s", "off_delay": "2s"}
    analog_tags = [{"name": name, "address": 2 * i, "type": "float32", "range": [0, 100], "alarms": alarms}
                   for i, name in enumerate(names[:analog])]
    switches = [{"name": name, "address": i, "type": "uint16"} for i, name in enumerate(names[analog:])]
    config = {
        "gateway": {"id": "GW-BENCH-RULES", "state_dir": str(workdir / "state"), "cache_dir": str(workdir / "cache"),
                    "runtime_dir": str(workdir / "run")},
        "devices": [{"name": "analog", "driver": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
                     "tags": analog_tags},
                    {"name": "switches", "driver": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
                     "tags": switches}],
        "uplink": {"host": "127.0.0.1", "port": free_port(), "transport": "plain", "signing_key": str(key)},
        "rules": {
            "alarms": [{"id": f"EXPR{k:05d}", "when": source, "for": "5s", "off_delay": "2s"}
                       for k, source in enumerate(sources)],
            "units": {f"U{u:02d}": {"max_bypassed": 3} for u in range(50)},
            "interlocks": [{"id": f"SIS-{k:04d}", "unit": f"U{k % 50:02d}", "bypass": f"XS{k:04d}", "trip": trip,
                            "max_bypass": "8h"} for k, trip in enumerate(trips)],
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.dump(config, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
    return path


def daemon_ready_seconds(config: Path, workdir: Path, cache: str,
                         cwd: Path | None = None) -> tuple[float, float, bool, float]:
    """Spawn `gatewayd run` (from the sources in `cwd`, by default the current directory), wait for its
    READY=1; return (seconds to ready, resident MiB then, whether it then stopped on SIGTERM within
    STOP_WAIT seconds (if not it is killed), its CPU seconds to ready: on a shared machine the wall time
    varies with the load, the CPU time much less)."""
    from bench.common import cpu_seconds, rss_mib

    notify_path = workdir / "notify.sock"
    log_path = workdir / "daemon.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, open(log_path, "wb") as log:
        notify.bind(str(notify_path))
        notify.settimeout(1.0)
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "NOTIFY_SOCKET": str(notify_path),
               "CACHE_DIRECTORY": str(workdir / "cache")}
        argv = [sys.executable, "-m", "gatewayd", "run", "-c", str(config), "--log-level", "warning"]
        spawned = time.time()
        daemon = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            while True:
                try:
                    if b"READY=1" in notify.recv(4096):
                        break
                except TimeoutError:
                    if daemon.poll() is not None:
                        raise RuntimeError(f"the daemon exited ({daemon.returncode}) before it was ready: "
                                           f"{log_path.read_text()[-2000:]}") from None
            ready = time.time() - spawned
            rss, cpu = rss_mib(daemon.pid), cpu_seconds(daemon.pid)
        finally:
            daemon.terminate()
            try:
                daemon.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        notify_path.unlink()
    return ready, rss, daemon.returncode == 0, cpu


def bench_daemon_start(args) -> None:
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-rules-") as tmp:
        workdir = Path(tmp)
        config = write_config(workdir, args.analog, args.expressions, args.interlocks)
        (workdir / "cache").mkdir()
        cache = str(workdir / "numba")
        for numba_cache, config_cache in (("cold", "cold"), ("warm", "warm"), ("warm", "cold")):
            if config_cache == "cold":
                shutil.rmtree(workdir / "cache" / "config", ignore_errors=True)
            seconds, rss, stopped, _ = daemon_ready_seconds(config, workdir, cache)
            print(json.dumps({"bench": "daemon_start", "numba_cache": numba_cache, "config_cache": config_cache,
                              "tags": args.analog + args.interlocks,
                              "limit_alarms": 4 * args.analog, "expression_rules": args.expressions,
                              "interlocks": args.interlocks, "config_mib": round(config.stat().st_size / 2**20, 1),
                              "seconds_to_ready": round(seconds, 3), "rss_mib_at_ready": round(rss, 1),
                              "stopped_on_sigterm": stopped, "target_warm_s": 3.0}), flush=True)


def scan_inputs(size: int, analog: int, seed: int = 11):
    import numpy as np

    rng = np.random.default_rng(seed)
    values = rng.uniform(20.0, 80.0, size)
    values[analog:] = 0.0
    quality = np.zeros(size, np.uint8)
    return rng, values, quality


def perturb(rng, values, base, analog: int) -> None:
    """A scan's worth of change: every analog value is noisy around its operating point, 20 jump anywhere."""
    values[:analog] = base + rng.normal(0.0, 0.5, analog)
    hot = rng.integers(0, analog, 20)
    values[hot] = rng.uniform(0.0, 100.0, 20)


def bench_scans(args) -> None:
    import numpy as np  # noqa: F401

    from rules.engine import RuleEngine

    config, tag_alarms, rows, size = make_plant(args.analog, args.expressions, args.interlocks)
    results = {}
    for backend, scans in (("numba", args.scans), ("reference", args.reference_scans)):
        started = time.perf_counter()
        engine = RuleEngine.build(config, rows, size, tag_alarms, backend=backend, now_monotonic=0.0, now_wall=1e9)
        build_seconds = time.perf_counter() - started
        rng, values, quality = scan_inputs(size, args.analog)
        base = values[:args.analog].copy()
        engine.evaluate(values, quality, 0.0, 1e9)  # warm up (compiles or loads the cache)
        times, events = [], 0
        for n in range(1, scans + 1):
            perturb(rng, values, base, args.analog)
            started = time.perf_counter()
            events += len(engine.evaluate(values, quality, float(n), 1e9 + n))
            times.append(time.perf_counter() - started)
        kernel = [engine.last_seconds]
        results[backend] = statistics.median(times)
        print(json.dumps({"bench": "rules_scan", "backend": backend, "limit_alarms": 4 * args.analog,
                          "expression_rules": args.expressions, "interlocks": args.interlocks,
                          "alarms": engine.alarm_count, "scans": scans,
                          "median_ms": round(statistics.median(times) * 1000, 3),
                          "min_ms": round(min(times) * 1000, 3), "max_ms": round(max(times) * 1000, 3),
                          "kernels_last_ms": round(kernel[0] * 1000, 3),
                          "events_per_scan": round(events / scans, 1), "build_s": round(build_seconds, 3)}),
              flush=True)
    ratio = round(results["reference"] / results["numba"], 1)
    print(json.dumps({"bench": "rules_scan_ratio", "reference_over_numba": ratio, "target_ms": 2.0,
                      "target_ratio": 50}), flush=True)


def first_evaluation(args) -> None:
    """Child process: import, build, evaluate once; report the moments."""
    imported = time.time()
    import numpy as np  # noqa: F401

    from rules.engine import RuleEngine

    config, tag_alarms, rows, size = make_plant(args.analog, args.expressions, args.interlocks)
    configured = time.time()
    engine = RuleEngine.build(config, rows, size, tag_alarms, now_monotonic=0.0, now_wall=1e9)
    built = time.time()
    rng, values, quality = scan_inputs(size, args.analog)
    engine.evaluate(values, quality, 0.0, 1e9)
    done = time.time()
    print(json.dumps({"make_config": configured - imported, "build": built - configured,
                      "first_evaluate": done - built, "done_at": done}), flush=True)


def bench_start(args) -> None:
    with tempfile.TemporaryDirectory(prefix="gatewayd-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            spawned = time.time()
            out = subprocess.run([sys.executable, "-m", "bench.bench_rules", "--first-evaluation",
                                  "--analog", str(args.analog), "--expressions", str(args.expressions),
                                  "--interlocks", str(args.interlocks)],
                                 env=env, capture_output=True, text=True, check=True)
            child = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"bench": "rules_start", "cache": label, "limit_alarms": 4 * args.analog,
                              "expression_rules": args.expressions, "interlocks": args.interlocks,
                              "seconds": round(child["done_at"] - spawned, 3),
                              "phases_s": {key: round(value, 3) for key, value in child.items() if key != "done_at"},
                              "target_warm_s": 3.0}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analog", type=int, default=25_000, help="analog tags, 4 limit alarms each")
    parser.add_argument("--expressions", type=int, default=10_000)
    parser.add_argument("--interlocks", type=int, default=1_000)
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--reference-scans", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the plant")
    parser.add_argument("--first-evaluation", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-start", action="store_true", help="skip the cold/warm start measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.analog, args.expressions, args.interlocks = (args.analog // 10, args.expressions // 10,
                                                          args.interlocks // 10)
    if args.first_evaluation:
        first_evaluation(args)
        return
    bench_scans(args)
    if not args.no_start:
        bench_start(args)
        bench_daemon_start(args)


if __name__ == "__main__":
    main()
