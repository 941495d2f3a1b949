"""The plant in a box: start and stop the real processes that HIL tests, the demo and benchmarks use.

A real mosquitto broker, the PLC simulator and the gatewayd daemon, each a child process on
loopback, on free ports, in a working directory of its own. Nothing here knows about pytest.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hil_tests.sim.layout import plant_tags

ROOT = Path(__file__).resolve().parent.parent
SHARED_NUMBA_CACHE = ROOT / ".cache" / "numba"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise RuntimeError("mosquitto is not installed: run `make deps` (apt-get install mosquitto)")
    return found


class Process:
    """A child process with its output in a log file; stop() escalates from SIGTERM to SIGKILL. A Python
    child runs with faulthandler on and gets a SIGABRT before the SIGKILL: a stop that hangs leaves every
    thread's stack in its log, so a one-off hang under load says where it waited."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name, self.argv, self.log_path, self.env, self.cwd = name, argv, log_path, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = self.env
        if self._python:
            env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would be."""
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self._python:
                    self.proc.send_signal(signal.SIGABRT)  # faulthandler writes the stacks, then it dies
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(2.0)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def _python(self) -> bool:
        return self.argv[0] == sys.executable

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener of the broker: its certificate and key, and the CA its clients' certificates must
    come from (mosquitto's `require_certificate true`: no client certificate, no connection)."""

    port: int
    cafile: Path
    certfile: Path
    keyfile: Path

    def config(self) -> str:
        return (f"listener {self.port} 127.0.0.1\ncafile {self.cafile}\ncertfile {self.certfile}\n"
                f"keyfile {self.keyfile}\nrequire_certificate true\ntls_version tlsv1.2\n")


class Broker(Process):
    """mosquitto with a plain loopback listener on `port` (the platform's side in tests) and, with `tls`,
    a TLS listener for the gateway."""

    def __init__(self, workdir: Path, port: int | None = None, tls: BrokerTls | None = None):
        self.port = port or free_port()
        self.tls = tls
        conf = workdir / "mosquitto.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # persistence keeps the receiver's session (and its queued batches) across a broker restart,
        # as a platform's broker would
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {workdir}/\nuser {getpass.getuser()}\n"
                        "max_queued_messages 1000000\nmax_inflight_messages 100\n"
                        + (tls.config() if tls else ""))
        super().__init__("mosquitto", [mosquitto_binary(), "-c", str(conf)], workdir / "mosquitto.log")

    def start(self) -> Broker:
        super().start()
        wait_for_port(self.port)
        if self.tls:
            wait_for_port(self.tls.port)
        return self


class Simulator(Process):
    def __init__(self, workdir: Path, tags: int, port: int | None = None, period: float = 1.0,
                 seed: int = 1, served: Path | None = None):
        """`served`: where the simulator writes every read it answered when it stops (see plc.py)."""
        self.port = port or free_port()
        argv = [sys.executable, "-m", "hil_tests.sim.plc", "--port", str(self.port), "--tags", str(tags),
                "--period", str(period), "--seed", str(seed), *(["--served", str(served)] if served else [])]
        super().__init__("plc", argv, workdir / f"plc-{self.port}.log", cwd=ROOT)

    def start(self) -> Simulator:
        super().start()
        wait_for_port(self.port, timeout=30)
        return self


class HostilePeer(Process):
    """A hostile Modbus TCP peer (hil_tests/sim/hostile.py) answering from `mix`; its counts in `stats_path`."""

    def __init__(self, workdir: Path, seed: int, mix: str | None = None, port: int | None = None,
                 options: Sequence[str] = ()):
        self.port = port or free_port()
        self.stats_path = workdir / f"hostile-{self.port}.json"
        argv = [sys.executable, "-m", "hil_tests.sim.hostile", "--port", str(self.port), "--seed", str(seed),
                "--stats", str(self.stats_path), *(["--mix", mix] if mix else []), *options]
        super().__init__("hostile", argv, workdir / f"hostile-{self.port}.log", cwd=ROOT)

    def start(self) -> HostilePeer:
        super().start()
        wait_for_port(self.port)
        return self

    def stats(self) -> dict[str, Any]:
        """Requests and hostile frames so far (rewritten twice a second by the peer)."""
        try:
            return json.loads(self.stats_path.read_text())
        except FileNotFoundError:
            return {"requests": 0, "frames": 0, "kinds": {}}


class Daemon(Process):
    def __init__(self, workdir: Path, config_path: Path, log_level: str = "info"):
        # one kernel cache for every daemon the tests start: each would otherwise compile from cold
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_CACHE_DIR": str(SHARED_NUMBA_CACHE)}
        argv = [sys.executable, "-m", "gatewayd", "run", "-c", str(config_path), "--log-level", log_level]
        super().__init__("gatewayd", argv, workdir / "gatewayd.log", env=env, cwd=ROOT)


class CommandedProcess:
    """A simulator run as a child process, driven by one command a line on its stdin and answering each
    with one line on its stdout. Every read has a deadline: a simulator that stops answering fails the
    test at once, naming the command, instead of blocking on the pipe until pytest-timeout's 300 s."""

    def __init__(self, argv: Sequence[str], ready: str, start_timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(list(argv), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready_line = self._answer("(start)", start_timeout)
        assert self.ready_line.startswith(ready), f"{' '.join(argv[1:3])} did not start: {self.ready_line!r}"

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")  # the simulator ended: the waiting command gets an empty answer

    def _answer(self, command: str, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"the simulator did not answer {command!r} within {timeout:g} s") from None

    def ask(self, command: str, timeout: float = 45.0) -> str:
        """Send one command and return its answer line."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer(command, timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `gatewayd ARGS` as a user would, capturing its output."""
    return subprocess.run([sys.executable, "-m", "gatewayd", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def make_key(workdir: Path) -> tuple[Path, Path]:
    key = workdir / "signing.key"
    if not key.exists():
        result = run_cli("keygen", str(key))
        if result.returncode != 0:
            raise RuntimeError(f"keygen failed: {result.stderr}")
    return key, Path(f"{key}.pub")


def plant_config(workdir: Path, *, gateway_id: str = "GW-TEST-001", plc_port: int, broker_port: int,
                 tags: int, poll_interval: float = 1.0, scan_interval: float = 1.0,
                 extra_devices: list[dict[str, Any]] | None = None, uplink: dict[str, Any] | None = None,
                 max_interval: float | None = None, marker: bool = False,
                 store: dict[str, Any] | None = None, history: dict[str, Any] | None = None) -> Path:
    """Write a config for the simulated plant; the same layout the simulator serves."""
    key, _ = make_key(workdir)
    tag_defs = plant_tags(tags, marker=marker)
    if max_interval is not None:
        for tag in tag_defs:
            tag["max_interval"] = max_interval
    config = {
        "gateway": {"id": gateway_id, "name": "HIL test gateway", "scan_interval": scan_interval,
                    "state_dir": str(workdir / "state"), "cache_dir": str(workdir / "cache"),
                    "runtime_dir": str(workdir / "run")},
        "devices": [{"name": "tank-plc", "driver": "modbus_tcp", "host": "127.0.0.1", "port": plc_port,
                     "poll_interval": poll_interval, "timeout": min(poll_interval, 1.0), "tags": tag_defs},
                    *(extra_devices or [])],
        "uplink": {"host": "127.0.0.1", "port": broker_port, "transport": "plain",
                   "signing_key": str(key), **(uplink or {})},
    }
    if store:
        config["store"] = store
    if history:
        config["history"] = history
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def stop_all(*processes: Process | None) -> None:
    for process in processes:
        if process is not None:
            with contextlib.suppress(Exception):
                process.stop()


def pause(process: Process) -> None:
    process.signal(signal.SIGSTOP)


def resume(process: Process) -> None:
    process.signal(signal.SIGCONT)
