"""The daemon as systemd sees it: sd_notify messages on a socket the test owns, and a journal that stays
short while a device is dead.

The test plays systemd's part: it binds a Unix datagram socket, and starts the daemon with
NOTIFY_SOCKET pointing at it and WATCHDOG_USEC set, as the service manager would.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path

import yaml

from hil_tests.harness import Daemon, Simulator, free_port, plant_config, stop_all


class FakeNotifySocket:
    """The service manager's end of sd_notify: collects every datagram with the time it came."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, fields in self.messages:
                if key in fields:
                    return fields
            self.receive_for(0.2)
        raise AssertionError(f"no {key} within {timeout} s; got {[m for _, m in self.messages]}")

    def index_of(self, key: str) -> int:
        return next(index for index, (_, fields) in enumerate(self.messages) if key in fields)

    def close(self) -> None:
        self.sock.close()


def service_daemon(workdir: Path, config: Path, notify: FakeNotifySocket | None = None,
                   watchdog_usec: int = 1_000_000, environment: dict[str, str] | None = None) -> Daemon:
    daemon = Daemon(workdir, config)
    for name in ("WATCHDOG_PID", "NUMBA_CACHE_DIR"):  # as systemd runs it: the cache in $CACHE_DIRECTORY
        daemon.env.pop(name, None)
    if notify is not None:
        daemon.env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec))
    daemon.env.update(environment or {})
    return daemon.start()


def as_systemd_runs_it(workdir: Path, config: Path) -> dict[str, str]:
    """Rewrite a plant config the way the installed example is written (no directories, the key as a
    credential) and return the environment systemd would give the unit."""
    document = yaml.safe_load(config.read_text())
    for key in ("state_dir", "cache_dir", "runtime_dir"):
        del document["gateway"][key]
    key = Path(document["uplink"]["signing_key"])
    document["uplink"]["signing_key"] = "credential:signing.key"
    config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    credentials = workdir / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "signing.key").write_bytes(key.read_bytes())
    (credentials / "signing.key").chmod(0o400)
    return {"STATE_DIRECTORY": str(workdir / "state"), "CACHE_DIRECTORY": str(workdir / "cache"),
            "RUNTIME_DIRECTORY": str(workdir / "run"), "CREDENTIALS_DIRECTORY": str(credentials)}


def add_metrics(config: Path) -> int:
    """Turn on the Prometheus endpoint on a free loopback port; return the port."""
    port = free_port()
    document = yaml.safe_load(config.read_text())
    document["metrics"] = {"listen": f"127.0.0.1:{port}"}
    config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return port


def scrape(port: int) -> dict[str, float]:
    """The endpoint's samples as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_for_scrape(port: int, daemon: Daemon, timeout: float = 60.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except OSError:
            assert daemon.running, daemon.log_text()[-3000:]
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_ready_after_the_first_scan_then_watchdog_pings_then_stopping(tmp_path: Path):
    """Run as the unit runs it: directories and the signing key from systemd's environment."""
    plc = Simulator(tmp_path, 20).start()
    # no broker on this port: nothing is acknowledged, so what the first scan committed stays in the store
    config = plant_config(tmp_path, plc_port=plc.port, broker_port=free_port(), tags=20)
    environment = as_systemd_runs_it(tmp_path, config)
    notify = FakeNotifySocket(tmp_path / "notify.sock")
    daemon = None
    try:
        daemon = service_daemon(tmp_path, config, notify, environment=environment)
        ready = notify.wait_for("READY", timeout=120)
        with sqlite3.connect(tmp_path / "state" / "gatewayd.db") as db:
            committed = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        assert committed > 0, "READY=1 only after the first scan has committed"
        assert re.fullmatch(r"\d+/1 devices up, \d+ tags bad, \d+ rows pending, uplink down", ready["STATUS"])
        notify.receive_for(3)
        mapped = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
        assert "rules/kernels/native" in mapped and "llvmlite" not in mapped, "the built kernels, no LLVM"
        pings = [at for at, fields in notify.messages[notify.index_of("READY"):] if "WATCHDOG" in fields]
        assert len(pings) >= 3, "WATCHDOG_USEC 1 s asks for a ping every 0.5 s while the loops turn"
        assert notify.messages[0][1]["STATUS"].startswith("starting:")
        assert daemon.stop() == 0
        notify.receive_for(0.5)
        stopping = notify.index_of("STOPPING")
        assert stopping > notify.index_of("READY")
        assert notify.messages[stopping][1]["STATUS"].startswith("stopping:")
        assert not any("WATCHDOG" in fields for _, fields in notify.messages[stopping + 1:])
        assert "rule kernels: the ahead-of-time build" in daemon.log_text(), "the kernels `make venv` built"
        assert not any((tmp_path / "cache" / "numba").iterdir()), "nothing compiled, nothing cached"
    finally:
        notify.close()
        stop_all(daemon, plc)


def test_a_dead_device_logs_its_state_changes_not_every_failed_poll(tmp_path: Path):
    plc = Simulator(tmp_path, 10).start()
    dead_port = free_port()  # nothing listens here
    dead = {"name": "dead-plc", "driver": "modbus_tcp", "host": "127.0.0.1", "port": dead_port,
            "poll_interval": 0.1, "timeout": 0.1, "backoff_initial": 0.05, "backoff_max": 0.1,
            "tags": [{"name": "DEAD1", "address": 0, "type": "int16"}]}
    config = plant_config(tmp_path, plc_port=plc.port, broker_port=free_port(), tags=10, extra_devices=[dead])
    port = add_metrics(config)
    daemon = None
    try:
        daemon = service_daemon(tmp_path, config)
        wait_for_scrape(port, daemon)
        deadline = time.monotonic() + 60
        while scrape(port)['gatewayd_device_poll_failures_total{device="dead-plc"}'] < 40:
            assert time.monotonic() < deadline, "the dead device is not being retried"
            time.sleep(0.5)
        failures = scrape(port)['gatewayd_device_poll_failures_total{device="dead-plc"}']
        assert daemon.stop() == 0
        lines = daemon.log_text().splitlines()
        about_dead = [line for line in lines if "dead-plc" in line or str(dead_port) in line]
        assert len(about_dead) == 1 and "down" in about_dead[0], "\n".join(about_dead[:20])
        assert len(lines) < 15, f"{len(lines)} log lines for {failures:.0f} failed polls:\n" + "\n".join(lines)
    finally:
        stop_all(daemon, plc)
