"""`make demo`: the simulated tank plant, a local mosquitto, the daemon with config.example.yaml, and
the live upstream view. Ctrl-C stops all of it.

The ports and paths come from config.example.yaml itself, so what runs is exactly what the example says.
"""

from __future__ import annotations

import signal
import socket
import sys

import yaml

from gatewayd.keys import load_public_key
from gatewayd.uplink.receiver import Receiver
from gatewayd.watch import watch
from hil_tests.harness import ROOT, Broker, Daemon, Simulator, make_key, stop_all

EXAMPLE = ROOT / "config.example.yaml"
WORKDIR = ROOT / ".demo"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main() -> int:
    config = yaml.safe_load(EXAMPLE.read_text())
    device = config["devices"][0]
    plc_port, broker_port = device["port"], config["uplink"]["port"]
    busy = [port for port in (plc_port, broker_port) if not port_free(port)]
    if busy:
        print(f"demo: port(s) {busy} are in use; stop what uses them or edit {EXAMPLE.name}", file=sys.stderr)
        return 1
    WORKDIR.mkdir(exist_ok=True)
    key, public_key = make_key(WORKDIR)
    assert (ROOT / config["uplink"]["signing_key"]).resolve() == key.resolve(), "example key path moved"
    tag_count = len(device["tags"])
    broker = simulator = daemon = None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        broker = Broker(WORKDIR, broker_port).start()
        simulator = Simulator(WORKDIR, tag_count, plc_port).start()
        daemon = Daemon(WORKDIR, EXAMPLE).start()
        print(f"demo: plant on :{plc_port}, broker on :{broker_port}, daemon log in {daemon.log_path}")
        receiver = Receiver("127.0.0.1", broker_port, f"{config['uplink'].get('topic_prefix', 'gatewayd')}/+/batch",
                            insecure_plain=True)
        return watch(receiver, load_public_key(public_key))
    except KeyboardInterrupt:
        return 0
    finally:
        print("\ndemo: stopping daemon, plant and broker")
        stop_all(daemon, simulator, broker)


if __name__ == "__main__":
    sys.exit(main())
