"""The daemon against a second, independent OPC UA stack: node-opcua (hil_tests/sim/nodeopcua/server.js).

Real processes throughout: the node-opcua server, the daemon, mosquitto and a receiver standing in
for the platform. One server plays the awkward plant server of the first week: it revises the
publishing interval and keep-alive count up, refuses requests of more than 100 operations, is
restarted with its namespaces renumbered, and is frozen (SIGSTOP) and thawed. The gateway must
deliver every value from the right node, raise no false outage on quiet values, and keep one TCP
connection per device to the server. A rejected password is checked on both stacks.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant
from hil_tests.harness import Broker, Daemon, make_key
from hil_tests.sim.opcua_server import NAMESPACE, make_certificate
from hil_tests.simprocess import ROOT, SimProcess
from hil_tests.sockets import open_connections
from hil_tests.test_end_to_end import events_of, samples_by_tag
from hil_tests.test_opcua_daemon_log import crash_lines, wait_for

NODE_SERVER = str(ROOT / "hil_tests" / "sim" / "nodeopcua" / "server.js")
BULK = 500  # variables behind a server limited to 100 operations per request
POLLED = range(250, BULK)  # these are read (MaxNodesPerRead), the others monitored (MaxMonitoredItemsPerCall)
QUIET = 4  # variables that never change: only keep-alives keep them current
TYPES = "Double,Float,Int32,UInt32,Int64,UInt64"
DECOY = 1e9  # the value of every node of a decoy namespace (server.js)
WAIT = 40.0


def node_server(options: list[str]) -> SimProcess:
    return SimProcess([NODE_SERVER], options, "node-opcua simulator", launcher=("node",))


def asyncua_server(options: list[str]) -> SimProcess:
    return SimProcess(["hil_tests.sim.opcua_server"], options, "asyncua simulator")


def from_node(value: float | None, index: int) -> bool:
    """Whether `value` is one server.js serves at GEN`index`: index * 1000 + step % 1000."""
    return value is not None and value != DECOY and int(value) // 1000 == index and value == int(value)


def since_good(rows: list[tuple]) -> list[tuple]:
    """A tag's samples from its first GOOD one on (before it, NO_VALUE until the first data is normal)."""
    first = next((index for index, row in enumerate(rows) if row[2] == Quality.GOOD), len(rows))
    return rows[first:]


def daemon_config(tmp_path: Path, broker: Broker, devices: list[dict[str, Any]]) -> Path:
    key, _ = make_key(tmp_path)
    config = {"gateway": {"id": GATEWAY_ID, "scan_interval": 0.5, "state_dir": str(tmp_path / "state"),
                          "cache_dir": str(tmp_path / "cache"), "runtime_dir": str(tmp_path / "run")},
              "devices": devices,
              "uplink": {"host": "127.0.0.1", "port": broker.port, "transport": "plain", "signing_key": str(key)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def opcua_device(name: str, port: int, tags: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return {"name": name, "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}", "security_policy": "None",
            "timeout": 1.0, "poll_interval": 1.0, "backoff_initial": 0.1, "backoff_max": 0.5, **settings, "tags": tags}


def wait_until(condition, what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert daemon.running, daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}:\n{daemon.log_text()[-3000:]}"
        time.sleep(0.25)


@pytest.fixture
def plant(tmp_path: Path):
    broker = Broker(tmp_path).start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    built = Plant(tmp_path, broker, None, receiver, tmp_path / "config.yaml")
    yield built
    receiver.stop()
    for process in built.daemons + [broker]:
        process.stop()


def test_node_opcua_server_of_the_first_week(plant: Plant, sim_processes):
    """Granted rates slower than asked, 100 operations per request, nsu= ids across a renumbering
    restart, and freezes: every value right, no false outage, one connection per device."""
    server = sim_processes(node_server([
        "--vars", str(BULK), "--types", TYPES, "--quiet", str(QUIET), "--period", "0.5",
        "--min-publishing-interval", "1", "--min-keepalive-count", "5", "--operation-limit", "100",
        "--decoy-namespaces", "0"]))
    bulk = [{"name": f"G{i}", "node": f"nsu={NAMESPACE};s=GEN{i:05d}", **({"mode": "poll"} if i in POLLED else {})}
            for i in range(BULK)]
    quiet = [{"name": f"Q{i}", "node": f"nsu={NAMESPACE};s=QUIET{i:05d}"} for i in range(QUIET)]
    # asked 250 ms and 3 publishes per keep-alive, granted 1 s and 5: a watchdog on the asked rates
    # (1.5 s of silence) would drop the quiet device between two keep-alives (5 s)
    rates = {"publishing_interval": 0.25, "keepalive_count": 3}
    plant.config = daemon_config(plant.workdir, plant.broker, [opcua_device("bulk", server.port, bulk, **rates),
                                                               opcua_device("quiet", server.port, quiet, **rates)])
    daemon = plant.start_daemon()

    def every_value_right(since: float) -> bool:
        received = samples_by_tag(plant)
        return all(any(ts / 1000 > since and quality == Quality.GOOD and from_node(value, i)
                       for ts, value, quality in received.get(f"G{i}", [])) for i in range(BULK))

    started = time.time()
    wait_until(lambda: every_value_right(started), "every one of 500 tags GOOD with its node's value", daemon)
    wait_until(lambda: all(samples_by_tag(plant).get(f"Q{i}") for i in range(QUIET)), "quiet tags arrive", daemon)
    time.sleep(12.0)  # two keep-alive periods of the granted subscription
    received = samples_by_tag(plant)
    wrong = {f"G{i}": row for i in range(BULK) for row in received[f"G{i}"]
             if row[1] is not None and not from_node(row[1], i)}
    assert not wrong, f"values of other nodes: {dict(list(wrong.items())[:5])}"
    bad = [(f"G{i}", row) for i in range(BULK) for row in since_good(received[f"G{i}"]) if row[2] != Quality.GOOD]
    assert not bad, f"{len(bad)} samples not GOOD, e.g. {bad[:3]}:\n{daemon.log_text()[-3000:]}"
    quiet_rows = [since_good(received[f"Q{i}"]) for i in range(QUIET)]
    assert {row[2] for rows in quiet_rows for row in rows} == {Quality.GOOD}, "quiet tags stay GOOD"
    assert [rows[0][1] for rows in quiet_rows] == [i * 1000.0 for i in range(QUIET)]
    assert events_of(plant, "device_down") == [], f"no false outage:\n{daemon.log_text()[-3000:]}"
    assert "revised the subscription to a publishing interval of 1 s and a keep-alive count of 5" in daemon.log_text()
    assert "BadTooManyOperations" not in daemon.log_text(), "the advertised limits are kept to, not discovered"

    # a restart that puts two namespaces before the simulator's: the same ids at index 2 now hold DECOY
    server.signal(signal.SIGKILL)
    server.options[server.options.index("--decoy-namespaces") + 1] = "2"
    server.start()
    restarted = time.time()
    wait_until(lambda: every_value_right(restarted), "every tag right again after the renumbering restart", daemon)

    for cycle in range(3):
        downs, backs = daemon.log_text().count("down:"), daemon.log_text().count("back after")
        server.signal(signal.SIGSTOP)
        wait_for(daemon, "down:", downs + 2)  # both devices
        time.sleep(1.0)  # reconnect attempts meet the frozen server too
        server.signal(signal.SIGCONT)
        wait_for(daemon, "back after", backs + 2)
        time.sleep(0.5)  # the server has answered whatever the old sockets still held
        assert open_connections(daemon.proc.pid, server.port) == 2, f"cycle {cycle}: one connection per device"

    assert daemon.stop() == 0
    assert crash_lines(daemon) == [], "\n".join(crash_lines(daemon))
    assert plant.report().ok


@pytest.mark.parametrize("stack", ["node-opcua", "asyncua"])
def test_a_wrong_password_backs_off_with_one_clear_line_on_either_stack(plant: Plant, sim_processes, stack):
    uri = {"node-opcua": "urn:gatewayd:sim:nodeopcua", "asyncua": "urn:gatewayd:sim:opcua"}[stack]
    pki = plant.workdir / "pki"
    make_certificate(pki / "server", "server", uri)
    client_cert, client_key = make_certificate(pki / "client", "client", "urn:gatewayd:test:client")
    (pki / "trusted").mkdir()
    (pki / "trusted" / "server.der").write_bytes((pki / "server" / "server.der").read_bytes())
    (pki / "password").write_text("not-the-right-one\n")
    (pki / "password").chmod(0o600)  # the gateway refuses a secret others can read
    options = ["--vars", "3", "--user", "operator:the-right-one", "--security-dir", str(pki / "server")]
    server = sim_processes(node_server(options) if stack == "node-opcua" else asyncua_server(options))
    secure = {"security_policy": "Basic256Sha256", "certificate": str(client_cert), "private_key": str(client_key),
              "trust_store": str(pki / "trusted"), "username": "operator", "password_file": str(pki / "password"),
              "credential_backoff": "1h"}
    tags = [{"name": f"G{i}", "node": f"ns=2;s=GEN{i:05d}"} for i in range(3)]
    plant.config = daemon_config(plant.workdir, plant.broker, [opcua_device("dcs", server.port, tags, **secure)])
    daemon = plant.start_daemon()
    wait_until(lambda: "rejected the credentials" in daemon.log_text(), "the rejection is logged", daemon)
    time.sleep(3.0)  # backoff_max is 0.5 s: a plain failure would have been retried several times
    assert daemon.stop() == 0
    log = daemon.log_text()
    lines = [line for line in log.splitlines() if "rejected the credentials" in line]
    assert len(lines) == 1 and "operator" in lines[0] and "3600 s" in lines[0], lines
    assert len(re.findall(r"device dcs .*down:", log)) == 1, log[-3000:]
    assert crash_lines(daemon) == [], "\n".join(crash_lines(daemon))
