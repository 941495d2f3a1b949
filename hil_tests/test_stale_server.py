"""Staleness with real processes: OPC UA simulator -> daemon -> mosquitto -> receiver.

A healthy server keeps even unchanging values fresh (every publish, keep-alives included, confirms
them). Frozen with SIGSTOP, its tags turn STALE within stale_after of the last publish, keeping their
last value, then COMM_FAILURE (value null) when the driver's watchdog drops the session; after SIGCONT
they are GOOD again.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant
from hil_tests.harness import Broker, make_key
from hil_tests.simprocess import SimProcess
from hil_tests.test_end_to_end import samples_by_tag

PUBLISHING = 0.25
KEEPALIVE = 4
STALE_AFTER = (KEEPALIVE + 1) * PUBLISHING  # the documented default for subscribed tags
WATCHDOG = 2 * KEEPALIVE * PUBLISHING
IN_FLIGHT = 0.3  # a publish the server sent just before it froze may reach the daemon this much later
LOAD_SLACK = 1.5  # the watchdog looks every 0.25 s; the rest is for a loaded test machine (timeout is 3 s)
MOVING = [f"G{i}" for i in range(4)]
STEADY = ["LSHH101", "XV101"]  # rarely or never change: only keep-alives keep them fresh
WAIT = 30.0


@pytest.fixture
def plant(tmp_path: Path, sim_processes):
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "4", "--period", "0.2"],
                                      "OPC UA simulator"))
    broker = Broker(tmp_path).start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    key, _ = make_key(tmp_path)

    def device(name: str, tags: list[dict]) -> dict:
        return {"name": name, "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{server.port}",
                "security_policy": "None", "timeout": 3.0, "publishing_interval": PUBLISHING,
                "keepalive_count": KEEPALIVE, "backoff_initial": 0.1, "backoff_max": 0.5, "tags": tags}

    config = {
        "gateway": {"id": GATEWAY_ID, "scan_interval": 1.0, "state_dir": str(tmp_path / "state"),
                    "cache_dir": str(tmp_path / "cache"), "runtime_dir": str(tmp_path / "run")},
        "devices": [device("moving", [{"name": name, "node": f"ns=2;s=GEN{i:05d}"} for i, name in enumerate(MOVING)]),
                    device("steady", [{"name": name, "node": f"ns=2;s={name}"} for name in STEADY])],
        "uplink": {"host": "127.0.0.1", "port": broker.port, "transport": "plain", "signing_key": str(key)},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    built = Plant(tmp_path, broker, None, receiver, path)
    yield built, server
    receiver.stop()
    for process in built.daemons + [broker]:
        process.stop()


def wait_until(condition, what: str, daemon) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert daemon.running, daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def after(rows: list, moment: float) -> list:
    return [row for row in rows if row[0] / 1000 > moment]


def test_a_frozen_server_turns_stale_then_comm_failure_then_good_again(plant):
    plant, server = plant
    names = MOVING + STEADY
    daemon = plant.start_daemon()
    wait_until(lambda: all(any(q == Quality.GOOD for _, _, q in samples_by_tag(plant).get(name, []))
                           for name in names), "every tag arrives GOOD", daemon)
    healthy_from = time.time()
    time.sleep(3 * STALE_AFTER)
    received = samples_by_tag(plant)
    assert not [row for name in names for row in received[name] if row[2] != Quality.GOOD and
                row[0] / 1000 > healthy_from], "a healthy server's tags stay GOOD, unchanging ones too"

    frozen_at = time.time()
    server.signal(signal.SIGSTOP)
    wait_until(lambda: all(any(q == Quality.COMM_FAILURE for _, _, q in after(samples_by_tag(plant)[name], frozen_at))
                           for name in names), "every tag turns COMM_FAILURE", daemon)
    received = samples_by_tag(plant)
    figures = {}
    for name in names:
        rows = received[name]
        first_bad = next(i for i, row in enumerate(rows) if row[2] != Quality.GOOD and row[0] / 1000 > healthy_from)
        (stale_ts, stale_value, stale_q), (down_ts, down_value, down_q) = rows[first_bad:first_bad + 2]
        last_good = rows[first_bad - 1]
        assert (stale_q, down_q) == (Quality.STALE, Quality.COMM_FAILURE), f"{name}: {rows[first_bad - 1:]}"
        assert stale_value == last_good[1], f"{name}: STALE keeps the last value"
        assert down_value is None, f"{name}: a bad sample's value is null"
        stale_in, down_in = stale_ts / 1000 - frozen_at, down_ts / 1000 - frozen_at
        assert stale_in <= STALE_AFTER + IN_FLIGHT, f"{name}: STALE {stale_in:.3f} s after the freeze"
        assert stale_in < down_in, name
        # the watchdog counts from the last publish, up to keepalive_count publishing intervals before the freeze;
        # the device is declared down as soon as it trips, not after a polite close that waits `timeout`
        assert WATCHDOG - KEEPALIVE * PUBLISHING <= down_in <= WATCHDOG + LOAD_SLACK, \
            f"{name}: down {down_in:.3f} s after the freeze"
        figures[name] = [round(stale_in, 3), round(down_in, 3)]
    print(json.dumps({"stale_after": STALE_AFTER, "watchdog": WATCHDOG, "stale_and_down_after_freeze": figures}))

    resumed_at = time.time()
    server.signal(signal.SIGCONT)
    wait_until(lambda: all(any(q == Quality.GOOD for _, _, q in after(samples_by_tag(plant)[name], resumed_at))
                           for name in names), "every tag GOOD again after SIGCONT", daemon)
    assert daemon.stop() == 0
    assert plant.report().ok
