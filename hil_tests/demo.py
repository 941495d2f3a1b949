"""`make demo`: a simulated plant with one device of every driver kind, a local mosquitto, the daemon
with config.example.yaml, and the live upstream view. Ctrl-C stops all of it, also when the output went
to a pipe that the same Ctrl-C closed (`make demo 2>&1 | tee demo.log`): the clean-up never depends on
stdout still being writable.

Ports and paths come from config.example.yaml itself (or the config given as the one argument, whose
relative `.demo` directory holds the run), so what runs is exactly what the example says.
The console (`gatewayd console`, docs/operations.md#the-console) runs beside it; its address is printed
and stays on the terminal view's second line. A platform runs too (docs/platform.md): a PostgreSQL cluster
of the demo's own, the gateway enrolled, and one `gatewayd-ingest` worker storing every batch there; the
view's second line counts what it stored, and the `gatewayd-ingest` command to look at it is printed.
Every minute and a half a methane leak grows on the gas panel's channel 1 past level 1 and level 2
and clears again, so there is something to watch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from gatewayd.keys import load_public_key
from gatewayd.platform.receiver import Receiver
from gatewayd.platform.watch import watch
from hil_tests.harness import ROOT, Broker, Daemon, Process, Simulator, make_key, stop_all, wait_for_port
from hil_tests.ingest_plant import Platform
from hil_tests.sim.rtu_bus import SerialPair

EXAMPLE = ROOT / "config.example.yaml"
DEMO_DIR = ".demo"  # relative to the config: the example's state, cache, key and serial line are there
LEAK_PERIOD = 90.0
LEAK_PROFILE = (2.0, 8.0, 15.0, 23.0, 30.0, 44.0, 48.0, 35.0, 18.0, 6.0, 0.5)  # %LEL, one step every 5 s


def tcp_port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def say(text: str) -> None:
    """Print a line; once stdout is a closed pipe, say nothing more (and let nothing fail for it)."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, ValueError):
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that no later write or the flush at exit meets the closed pipe again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def module(name: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", name, *map(str, args)]


def device_port(device: dict[str, Any]) -> int | None:
    """The TCP (or UDP) port a device's simulator listens on, from its port or its URL."""
    url = {"opcua": "endpoint", "websocket": "url"}.get(device["driver"])
    return urlparse(device[url]).port if url else device.get("port")


def start_simulator(device: dict[str, Any], workdir: Path) -> Any:
    """The simulator that stands in for this device, started and listening."""
    kind = device["driver"]
    port = device_port(device)
    if kind == "modbus_tcp":
        return Simulator(workdir, len(device["tags"]), port).start()
    if kind == "modbus_rtu":
        return SerialPair(workdir, tuple(slave["unit_id"] for slave in device["slaves"])).start()
    argv = {
        "opcua": module("hil_tests.sim.opcua_server", "--port", port, "--vars", 0),
        "opcda_gateway": module("hil_tests.sim.opcda_gateway", "--port", port),
        "modbus_udp": module("hil_tests.sim.rtu_bus", "udp", "--port", port, "--tags", 12),
        "modbus_rtu_over_tcp": module("hil_tests.sim.rtu_bus", "rtu-over-tcp", "--port", port, "--tags", 12),
        "websocket": module("hil_tests.sim.ws_source", "--port", port, "--period", 1.0),
    }.get(kind)
    if kind == "gds":
        return GasPanel(port, workdir)
    if kind == "mqtt":
        return start_sensor_fleet(device, workdir)
    process = Process(device["name"], argv, workdir / f"sim-{device['name']}.log", cwd=ROOT).start()
    if kind == "modbus_udp":
        wait_for_line(process.log_path, "READY")
    else:
        wait_for_port(port, timeout=60)
    return process


def start_sensor_fleet(device: dict[str, Any], workdir: Path) -> Process:
    """Simulated smart sensors for an `mqtt` device, publishing to the demo's broker: JSON gas detectors
    on the device's subscription, or a Sparkplug B edge node for its group."""
    options: list[Any] = ["--port", device["port"], "--client-id", f"demo-{device['name']}"]
    if device.get("payload") == "sparkplug_b":
        options += ["--detectors", 0, "--sparkplug", f"{device['group']}/edge1", "--period", 2]
    else:
        options += ["--detectors", len(device["tags"]), "--topic", "plant/tankfarm/gas", "--period", 5]
    process = Process(device["name"], module("hil_tests.sim.sensor_fleet", *options),
                      workdir / f"sim-{device['name']}.log", cwd=ROOT).start()
    wait_for_line(process.log_path, "READY")
    return process


def wait_for_line(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no {text!r} in {path} after {timeout} s")


class GasPanel:
    """The GDS panel simulator, fed a leak now and then through its command input."""

    def __init__(self, port: int, workdir: Path):
        log = open(workdir / "sim-gds.log", "ab")
        self.proc = subprocess.Popen(module("hil_tests.sim.gds_panel", "--port", port), cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        wait_for_port(port)
        self.stopped = threading.Event()
        threading.Thread(target=self._leaks, daemon=True).start()

    def _leaks(self) -> None:
        while not self.stopped.wait(LEAK_PERIOD / 3):
            for concentration in LEAK_PROFILE:
                self.command(f"gas 1 {concentration}")
                if self.stopped.wait(5.0):
                    return
            self.stopped.wait(LEAK_PERIOD * 2 / 3)

    def command(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.stopped.set()

    def stop(self) -> None:
        self.stopped.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_console(example: Path, config: dict[str, Any], workdir: Path) -> tuple[Process, str]:
    """`gatewayd console` on the example's `console.listen`, answering; and its address."""
    host, _, port = config["console"]["listen"].rpartition(":")
    process = Process("console", module("gatewayd", "console", "-c", example), workdir / "console.log",
                      cwd=ROOT).start()
    wait_for_port(int(port), timeout=60)
    return process, f"http://{host}:{port}/"


def stop_simulators(simulators: list[Any]) -> None:
    for simulator in simulators:
        if isinstance(simulator, SerialPair):
            with contextlib.suppress(Exception):
                simulator.close()
        else:
            stop_all(simulator)


def main(example: Path = EXAMPLE) -> int:
    config = yaml.safe_load(example.read_text())
    workdir = example.parent / DEMO_DIR
    broker_port = config["uplink"]["port"]
    console_port = int(config["console"]["listen"].rpartition(":")[2])
    tcp_ports = [broker_port, console_port, *(port for device in config["devices"]
                                              if device["driver"] != "modbus_udp"
                                              and isinstance(port := device_port(device), int))]
    busy = [port for port in tcp_ports if not tcp_port_free(port)]
    if busy:
        print(f"demo: port(s) {busy} are in use; stop what uses them or edit {example.name}", file=sys.stderr)
        return 1
    workdir.mkdir(exist_ok=True)
    key, public_key = make_key(workdir)
    assert (example.parent / config["uplink"]["signing_key"]).resolve() == key.resolve(), "example key path moved"
    broker = daemon = console = platform = None
    simulators: list[Any] = []
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        broker = Broker(workdir, broker_port).start()
        say("demo: starting PostgreSQL and an ingest worker (the platform's side)")
        platform = Platform(workdir, broker_port, {config["gateway"]["id"]: public_key})
        # smart sensors start once the daemon subscribed: a Sparkplug host never asks for the births it missed
        publishers = [device for device in config["devices"] if device["driver"] == "mqtt"]
        for device in [device for device in config["devices"] if device not in publishers]:
            say(f"demo: starting a simulator for {device['name']} ({device['driver']})")
            simulators.append(start_simulator(device, workdir))
        daemon = Daemon(workdir, example).start()
        for device in publishers:
            wait_for_line(daemon.log_path, f"device {device['name']}: subscribed", timeout=120)
            say(f"demo: starting the sensors of {device['name']} ({device['driver']})")
            simulators.append(start_simulator(device, workdir))
        console, url = start_console(example, config, workdir)
        say(f"demo: broker on :{broker_port}, daemon log in {daemon.log_path}")
        say(f"demo: console on {url} (open it in a browser; log in {console.log_path})")
        say(f"demo: ingest into PostgreSQL: gatewayd-ingest --db \"{platform.conninfo}\" chain "
            f"{config['gateway']['id']}")
        topic = f"{config['uplink'].get('topic_prefix', 'gatewayd')}/+/batch"

        def note() -> str:
            samples, events = platform.stored()
            return f"console: {url}   PostgreSQL (gatewayd-ingest): {samples} samples, {events} events"

        return watch(Receiver("127.0.0.1", broker_port, topic, insecure_plain=True), load_public_key(public_key),
                     note=note)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader of our output is gone (tee killed by the same Ctrl-C): stop all
        silence_stdout()
        return 0
    finally:
        # a second Ctrl-C, or a SIGTERM, must not cut the clean-up short: the children are in sessions of
        # their own (a Ctrl-C at the terminal does not reach them), so only this stops them
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("\ndemo: stopping the daemon, the simulators and the broker")
        stop_all(console, daemon)
        stop_simulators(simulators)
        if platform:
            platform.close()
        stop_all(broker)


if __name__ == "__main__":
    sys.exit(main(*map(Path, sys.argv[1:2])))
