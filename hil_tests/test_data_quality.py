"""Data-quality figures with real processes: a transmitter simulator -> daemon -> mosquitto -> receiver.

The transmitter (hil_tests/sim/transmitter.py) answers Modbus TCP reads with a reading that changes at
every read until the test freezes it, can go mute, and records the time of every read it answered. The
daemon must raise `frozen` only after `frozen_after` of an unchanging reading and `unfrozen` on the first
change, and its `data_quality` events must count exactly the reads the transmitter answered.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant
from hil_tests.harness import Broker, CommandedProcess, make_key, stop_all

POLL = 0.5
FROZEN_AFTER = 2.0
INTERVAL = 3.0
# a read the transmitter answered just before a report, whose answer reached the daemon just after it
IN_FLIGHT = 0.25
WAIT = 60.0


class Transmitter(CommandedProcess):
    """The simulator as a child process, driven by commands on its stdin."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "hil_tests.sim.transmitter", "--port", "0"], ready="READY ")
        self.port = int(self.ready_line.split()[1])

    def command(self, word: str) -> str:
        return self.ask(word)

    def stats(self) -> dict:
        return json.loads(self.command("stats"))


@pytest.fixture
def plant(tmp_path: Path):
    broker = Broker(tmp_path).start()
    transmitter = Transmitter()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    key, _ = make_key(tmp_path)
    config = {
        "gateway": {"id": GATEWAY_ID, "scan_interval": POLL, "state_dir": str(tmp_path / "state"),
                    "cache_dir": str(tmp_path / "cache"), "runtime_dir": str(tmp_path / "run")},
        "devices": [{"name": "xmtr", "driver": "modbus_tcp", "host": "127.0.0.1", "port": transmitter.port,
                     "poll_interval": POLL, "timeout": POLL, "retries": 0, "backoff_initial": 0.1,
                     "backoff_max": 0.2,
                     "tags": [{"name": "LT-1", "address": 0, "type": "uint16", "range": [0, 65535],
                               "frozen_after": FROZEN_AFTER},
                              {"name": "PT-2", "address": 1, "type": "uint16", "range": [0, 400]}]}],
        "uplink": {"host": "127.0.0.1", "port": broker.port, "transport": "plain", "signing_key": str(key)},
        "data_quality": {"interval": INTERVAL},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    built = Plant(tmp_path, broker, None, receiver, path)
    yield built, transmitter
    receiver.stop()
    transmitter.close()
    stop_all(*built.processes())


def events(plant: Plant, kind: str) -> list[dict]:
    return [event for batch in plant.report().batches for event in batch.body["events"] if event["kind"] == kind]


def wait_for(plant: Plant, daemon, kind: str, where=lambda event: True) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [event for event in events(plant, kind) if where(event)]
        if found:
            return found[0]
        assert daemon.running, daemon.log_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {WAIT} s:\n{daemon.log_text()[-3000:]}")


def served(answered: list[float], start: float, end: float) -> int:
    return sum(1 for at in answered if start < at <= end)


def test_a_frozen_transmitter_and_figures_that_match_what_it_served(plant):
    plant, transmitter = plant
    daemon = plant.start_daemon()
    wait_for(plant, daemon, "data_quality")  # reads flowing, one period closed
    assert events(plant, "frozen") == [], "a reading that changes at every read is not frozen"

    frozen_at = time.time()
    assert transmitter.command("freeze") == "ok"
    frozen = wait_for(plant, daemon, "frozen")
    reading = transmitter.stats()["value"]
    assert frozen["source"] == "LT-1" and frozen["data"]["value"] == reading
    assert frozen["data"]["frozen_after"] == FROZEN_AFTER
    assert frozen["data"]["unchanged_since"] >= frozen_at, "the last change is the first read after the freeze"
    # the event's ts is carried in whole milliseconds, unchanged_since to the microsecond
    assert frozen["ts"] / 1000 - frozen["data"]["unchanged_since"] >= FROZEN_AFTER - 0.001
    assert events(plant, "unfrozen") == []

    thawed_at = time.time()
    assert transmitter.command("thaw") == "ok"
    unfrozen = wait_for(plant, daemon, "unfrozen")
    assert unfrozen["source"] == "LT-1" and unfrozen["data"]["value"] != reading
    assert unfrozen["data"]["changed_at"] >= thawed_at
    assert len(events(plant, "frozen")) == 1

    muted_at = time.time()
    assert transmitter.command("mute") == "ok"
    down = wait_for(plant, daemon, "device_down")
    time.sleep(2 * POLL)
    spoke_at = time.time()
    assert transmitter.command("speak") == "ok"
    up = wait_for(plant, daemon, "device_up")
    down_ts, up_ts = down["ts"] / 1000, up["ts"] / 1000
    assert muted_at <= down_ts < spoke_at <= up_ts
    last = wait_for(plant, daemon, "data_quality", lambda event: event["data"]["period_start"] > up_ts)
    answered = transmitter.stats()["answered"]

    reports = [event["data"] for event in events(plant, "data_quality") if event["data"]["period_end"]
               <= last["data"]["period_end"]]
    assert [report["period_start"] for report in reports[1:]] == [report["period_end"] for report in reports[:-1]]
    assert all(report["device"] == "xmtr" and (report["part"], report["parts"]) == (1, 1) for report in reports)
    outages = down_intervals(events(plant, "device_down"), events(plant, "device_up"))
    for report in reports:
        start, end, figures = report["period_start"], report["period_end"], report["period"]
        level, pressure = report["tags"]
        assert (level["tag"], pressure["tag"]) == ("LT-1", "PT-2")
        reads = level["period"]["reads"]  # one block: every answered request is one read of each tag
        assert pressure["period"]["reads"] == reads and figures["reads"] == 2 * reads
        assert served(answered, start, end - IN_FLIGHT) <= reads <= served(answered, start - IN_FLIGHT, end), \
            (report, answered)
        assert figures["expected_reads"] == pytest.approx(2 * (end - start) / POLL, rel=0.01)
        assert figures["completeness"] == pytest.approx(min(1.0, figures["reads"] / figures["expected_reads"]))
        assert pressure["period"]["out_of_range"] == reads, "500 is outside [0, 400]"
        assert level["period"]["out_of_range"] == 0 and pressure["outside_range"] and not level["outside_range"]
        down_seconds = sum(max(0.0, min(end, until) - max(start, since)) for since, until in outages)
        assert figures["online"] == pytest.approx(1.0 - down_seconds / (end - start), abs=0.002), (report, outages)
    end = last["data"]["period_end"]
    total = last["data"]["since_start"]
    assert served(answered, 0.0, end - IN_FLIGHT) <= total["reads"] / 2 <= served(answered, 0.0, end)
    assert total["online"] < 1.0 and total["completeness"] < 1.0
    timely = [report["period"] for report in reports if report["period"]["sent"]]
    assert timely and all(0 < figures["age_p50"] <= figures["age_p95"] for figures in timely)


def down_intervals(downs: list[dict], ups: list[dict]) -> list[tuple[float, float]]:
    """(down, up) Unix times of each outage the daemon reported, an open one ending in the far future."""
    transitions = sorted([(event["ts"] / 1000, False) for event in downs]
                         + [(event["ts"] / 1000, True) for event in ups])
    outages, since = [], None
    for at, up in transitions:
        if not up and since is None:
            since = at
        elif up and since is not None:
            outages.append((since, at))
            since = None
    return outages + ([(since, float("inf"))] if since is not None else [])
