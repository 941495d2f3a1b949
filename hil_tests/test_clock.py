"""The daemon's wall clock steps an hour back and an hour forward while it runs, under libfaketime.

libfaketime (Debian package `faketime`) is preloaded into the daemon only, with its offset in a file the
test rewrites (FAKETIME_TIMESTAMP_FILE, read on every call with FAKETIME_NO_CACHE=1) and the monotonic
clock left true (FAKETIME_DONT_FAKE_MONOTONIC=1): exactly what an NTP step or an operator's `date -s`
does to a running process. Sequence numbers, the chain and alarm on-delays must not notice; the
platform must get a `clock_jump` event for each step and the samples around it flagged CLOCK_UNSYNCED.

Each step falls inside an alarm's on-delay. Had the delay been measured on the wall clock, the step
back would hold the alarm for an hour, and the step forward would raise it at once.
"""

from __future__ import annotations

import glob
import os
import struct
import time
from pathlib import Path

import pytest
import yaml

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant, committed
from hil_tests.harness import Broker, Daemon, Simulator, plant_config, stop_all
from hil_tests.test_alarms import alarms, ask, force, force_level, wait_for
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet

ON_DELAY = 8.0
HOUR = 3600


def libfaketime() -> str:
    """The multi-threaded libfaketime (the daemon runs paho and the metrics rendering in threads)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is not installed: run `make deps` (apt-get install faketime)"
    return found[0]


class FakeClock:
    """The offset libfaketime applies to the daemon's wall clock; replaced atomically, so that a read
    never sees a half-written file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0)

    def set(self, offset_seconds: int) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(f"{offset_seconds:+d}\n")
        os.replace(temporary, self.path)

    def environment(self) -> dict[str, str]:
        return {"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(self.path), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture
def clock_plant(tmp_path: Path):
    """The tank (9 tags, forceable) every 500 ms; level and temperature alarms with an on-delay."""
    broker = Broker(tmp_path).start()
    plc = Simulator(tmp_path, 9, period=0.5)
    plc.argv.append("--overrides")
    plc.start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    config = plant_config(tmp_path, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=9,
                          poll_interval=0.5, scan_interval=0.5)
    document = yaml.safe_load(config.read_text())
    for tag in document["devices"][0]["tags"]:
        if tag["name"] in ("LT101", "TT101"):
            tag["alarms"]["on_delay"] = f"{ON_DELAY:g}s"
    config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    plant = Plant(tmp_path, broker, plc, receiver, config)
    yield plant
    receiver.stop()
    stop_all(*plant.processes())


def force_temperature(plant: Plant, celsius: float) -> None:
    force(plant, 2, list(struct.unpack(">2H", struct.pack(">f", celsius))))  # TT101: float32 at holding 2


def raised(plant: Plant, alarm: str) -> bool:
    return alarms(plant).get(alarm, {}).get("state") == "UNACK"


def test_wall_clock_steps_change_no_sequence_no_chain_and_no_on_delay(clock_plant: Plant):
    plant = clock_plant
    clock = FakeClock(plant.workdir / "faketime.rc")
    daemon = Daemon(plant.workdir, plant.config)
    daemon.env.update(clock.environment())
    plant.daemons.append(daemon.start())
    force_level(plant, 5.0)  # hold both away from their limits: the process model wanders
    force_temperature(plant, 60.0)
    wait_for("the control socket", lambda: ask(plant, {"cmd": "interlocks"}) is not None, plant)

    force_level(plant, 9.5)  # above H and HH: both wait out their on-delay
    time.sleep(1)
    clock.set(-HOUR)
    wait_for("LT101.H raised after its on-delay, despite the step back", lambda: raised(plant, "LT101.H"), plant,
             timeout=ON_DELAY + 30)
    force_level(plant, 5.0)

    force_temperature(plant, 110.0)  # above H 100
    time.sleep(1)
    clock.set(0)  # an hour forward
    time.sleep(2)
    assert not raised(plant, "TT101.H"), "the step forward must not shorten the on-delay"
    wait_for("TT101.H raised after its on-delay", lambda: raised(plant, "TT101.H"), plant, timeout=ON_DELAY + 30)

    assert daemon.stop() == 0
    wait_quiet(plant)
    samples, event_count = committed(daemon)
    report = plant.report()
    assert report.ok, report.format()  # seq 1..N, each batch chained to the one before
    events = [event for batch in report.batches for event in batch.body["events"]]
    steps = [event["data"]["step_seconds"] for event in events if event["kind"] == "clock_jump"]
    assert len(steps) == 2 and abs(steps[0] + HOUR) < 5 and abs(steps[1] - HOUR) < 5, steps
    # the clock guard adds its events below the scan, which counts only its own
    assert report.first_seq == 1 and (report.samples, report.events) == (samples, event_count + len(steps))
    per_tag = samples_by_tag(plant)
    flagged = sum(quality == Quality.CLOCK_UNSYNCED for rows in per_tag.values() for _, _, quality in rows)
    assert flagged > 0, "samples stamped around a step are flagged"
    # changes made while the clock was an hour back went out at once, not at max_interval (60 s):
    # report-by-exception decides on the monotonic clock
    level = [value for _, value, _ in per_tag["LT101"]]
    assert 5.0 in level[level.index(9.5):], level
    assert 110.0 in [value for _, value, _ in per_tag["TT101"]]
    raised_events = [(event["source"], event["data"].get("alarm")) for event in events
                     if event["kind"] == "alarm" and event["data"].get("state") == "UNACK"]
    assert {alarm for _, alarm in raised_events} >= {"LT101.H", "LT101.HH", "TT101.H"}, raised_events
    assert "Traceback" not in daemon.log_text()
