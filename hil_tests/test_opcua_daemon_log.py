"""The daemon's log through OPC UA server losses: the driver's own warning, no stack's traceback.

The OPC UA simulator is killed and restarted, then frozen and thawed, under the real daemon; an
operator reading the log must see one clear `down` warning per outage and no ERROR or Python
traceback from asyncua, which would read as a crash.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from hil_tests.harness import Broker, Daemon, make_key
from hil_tests.simprocess import SimProcess

WAIT = 30.0


def wait_for(daemon: Daemon, text: str, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while daemon.log_text().count(text) < count:
        assert daemon.running, daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{daemon.log_text()[-3000:]}"
        time.sleep(0.2)


def crash_lines(daemon: Daemon) -> list[str]:
    """Lines an operator would read as a crash: a Python traceback, or an ERROR of asyncua."""
    return [line for line in daemon.log_text().splitlines()
            if "Traceback" in line or " asyncua" in line and "ERROR" in line]


def test_server_losses_log_one_warning_each_and_no_asyncua_error_or_traceback(tmp_path: Path, sim_processes):
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "3", "--period", "0.2"],
                                      "OPC UA simulator"))
    broker = Broker(tmp_path).start()
    key, _ = make_key(tmp_path)
    config = {
        "gateway": {"id": "GW-LOG-001", "scan_interval": 1.0, "state_dir": str(tmp_path / "state"),
                    "cache_dir": str(tmp_path / "cache"), "runtime_dir": str(tmp_path / "run")},
        "devices": [{"name": "dcs", "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{server.port}",
                     "security_policy": "None", "backoff_initial": 0.1, "backoff_max": 0.5,
                     "tags": [{"name": f"G{i}", "node": f"ns=2;s=GEN{i:05d}"} for i in range(3)]}],
        "uplink": {"host": "127.0.0.1", "port": broker.port, "transport": "plain", "signing_key": str(key)},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    daemon = Daemon(tmp_path, path).start()
    try:
        time.sleep(3.0)  # a session with data
        server.signal(signal.SIGKILL)
        wait_for(daemon, "device dcs", 1)
        server.start()
        wait_for(daemon, "back after", 1)
        server.signal(signal.SIGSTOP)
        wait_for(daemon, "down:", 2)
        time.sleep(2.0)  # reconnect attempts against the frozen server
        server.signal(signal.SIGCONT)
        wait_for(daemon, "back after", 2)
        time.sleep(2.0)
    finally:
        daemon.stop()
        broker.stop()
    log = daemon.log_text()
    assert log.count("down:") == 2, log[-3000:]
    assert crash_lines(daemon) == [], "\n".join(crash_lines(daemon))
