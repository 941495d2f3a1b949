"""Gas detection through the real daemon: a 16-channel panel's leak, fault, calibration and frozen heartbeat
upstream, and a Midas-style detector's concentration, thresholds and unit.

The panel simulator (`hil_tests.sim.gds_panel`, the shipped `generic` profile) runs as a process
next to the tank PLC, the broker and the daemon; the test drives it over its stdin and reads what
the verifying receiver got: samples with their qualities, the panel's events, and the gas alarms
that the rules engine raises from the channels declared under `rules.gas`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from core.types import Quality
from hil_tests.conftest import Plant
from hil_tests.harness import CommandedProcess
from hil_tests.test_end_to_end import events_of, samples_by_tag, wait_quiet
from tests.uplinkschemas import batch_problems

POLL = 0.25
HEARTBEAT_TIMEOUT = 1.5
LEAKS = ("GT101", "GT102")
FAULTY, CALIBRATING, TOXIC = "GT105", "GT106", "GT110"
MIDAS_TAG = "GT301"


class PanelProcess(CommandedProcess):
    def __init__(self, device_map: str = "generic") -> None:
        super().__init__([sys.executable, "-m", "hil_tests.sim.gds_panel", "--port", "0", "--heartbeat-period",
                          "0.2", "--map", device_map], ready="READY ")
        self.port = int(self.ready_line.split()[1])

    def send(self, command: str) -> None:
        assert self.ask(command) == f"OK {command}"


@pytest.fixture
def panel() -> Iterator[PanelProcess]:
    process = PanelProcess()
    yield process
    process.close()


@pytest.fixture
def midas() -> Iterator[PanelProcess]:
    """A Midas-style detector, its registers encoded from the manual's map (not from the profile under test)."""
    process = PanelProcess("midas")
    yield process
    process.close()


def gds_device(port: int) -> dict:
    channels = []
    for channel in range(1, 17):
        combustible = channel <= 8
        channels.append({"channel": channel, "name": f"GT{100 + channel}", "gas": "methane" if combustible else "H2S",
                         "unit": "%LEL" if combustible else "ppm", "range": [0, 100], "deadband": 0.5,
                         "description": f"gas detector {channel}"})
    return {"name": "gds-north", "driver": "gds", "transport": "tcp", "host": "127.0.0.1", "port": port,
            "profile": "generic", "poll_interval": POLL, "timeout": 0.5, "heartbeat_timeout": HEARTBEAT_TIMEOUT,
            "channels": channels}


RULES = {"gas": [{"tag": tag, "type": "combustible", "gas": "methane", "level1": 20, "level2": 40}
                 for tag in (*LEAKS, FAULTY, CALIBRATING)]
         + [{"tag": TOXIC, "type": "toxic", "gas": "H2S", "oel": 10, "oel_kind": "MAC", "level1": 10, "level2": 20}]}


def wait_upstream(plant: Plant, condition: Callable[[dict], bool], what: str, timeout: float = 30.0) -> None:
    """Until `condition(samples by tag)` holds for what the receiver got so far."""
    deadline = time.monotonic() + timeout
    while not condition(samples_by_tag(plant)):
        assert time.monotonic() < deadline, f"never arrived upstream: {what}"
        time.sleep(0.5)


def values(samples: dict, tag: str) -> list[float]:
    return [value for _, value, _ in samples.get(tag, [])]


def qualities(samples: dict, tag: str) -> list[int]:
    return [quality for _, _, quality in samples.get(tag, [])]


def test_leak_fault_calibration_and_frozen_heartbeat_arrive_upstream(plant_factory, panel):
    plant = plant_factory(tags=9, poll_interval=0.5, scan_interval=0.25, extra_devices=[gds_device(panel.port)])
    document = yaml.safe_load(plant.config.read_text())
    document["rules"] = RULES
    plant.config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    daemon = plant.start_daemon()
    wait_upstream(plant, lambda s: Quality.GOOD in qualities(s, "GT116"), "the panel's channels")

    for level, value in ((1, 22), (2, 45)):
        for tag in LEAKS:
            panel.send(f"gas {int(tag[2:]) - 100} {value}")
        wait_upstream(plant, lambda s, level=level: all(level in values(s, f"{tag}.alarm") for tag in LEAKS),
                      f"alarm level {level} of the panel")
    panel.send("gas 10 12")  # toxic channel over its level 1
    panel.send("fault 5 1234")
    panel.send("mode 6 calibration")
    wait_upstream(plant, lambda s: Quality.SENSOR_FAULT in qualities(s, FAULTY)
                  and Quality.MAINTENANCE in qualities(s, CALIBRATING), "the fault and the calibration")
    panel.send("freeze")
    wait_upstream(plant, lambda s: Quality.DEVICE_ERROR in qualities(s, "GT116"), "the frozen heartbeat")
    panel.send("unfreeze")
    wait_upstream(plant, lambda s: qualities(s, "GT116")[-1] == Quality.GOOD, "the panel back after the freeze")
    assert daemon.stop() == 0
    wait_quiet(plant)

    report = plant.report()
    assert report.ok, report.format()
    samples = samples_by_tag(plant)
    for tag in LEAKS:
        levels = values(samples, f"{tag}.alarm")
        assert levels.index(1) < levels.index(2), f"{tag}: level 1 before level 2, got {levels}"
        assert max(value for value in values(samples, tag) if value is not None) >= 44.0
    gas_alarms = {(event["source"], event["data"]["level"]) for event in events_of(plant, "gas_alarm")}
    assert {(tag, level) for tag in LEAKS for level in (1, 2)} | {(TOXIC, 1)} <= gas_alarms

    assert 1234 in values(samples, f"{FAULTY}.fault")
    faults = events_of(plant, "gds_fault")
    assert [(event["source"], event["data"]["fault_code"]) for event in faults] == [(FAULTY, 1234)]

    maintenance = events_of(plant, "gds_maintenance")
    assert [(event["source"], event["data"]["mode"]) for event in maintenance] == [(CALIBRATING, "calibration")]
    assert not [event for event in events_of(plant, "gas_alarm") if event["source"] == CALIBRATING], \
        "calibration is no gas alarm"
    # but a channel in fault or calibration is not watching its area: its bad-PV alarm says so, with why
    bad_pv = {(event["data"]["alarm"], event["data"]["quality"]) for event in events_of(plant, "alarm")
              if event["data"]["kind"] == "bad_pv" and event["data"]["state"] == "UNACK"}
    assert {(f"{FAULTY}.BADPV", Quality.SENSOR_FAULT), (f"{CALIBRATING}.BADPV", Quality.MAINTENANCE)} <= bad_pv, \
        bad_pv

    assert len(events_of(plant, "gds_heartbeat_frozen")) == 1
    assert len(events_of(plant, "gds_heartbeat_resumed")) == 1
    for tag in ("GT116", f"{LEAKS[0]}.alarm", f"{FAULTY}.fault"):
        assert Quality.DEVICE_ERROR in qualities(samples, tag), f"{tag} not marked by the frozen heartbeat"
    assert qualities(samples, FAULTY)[-1] == Quality.SENSOR_FAULT  # still in fault after the freeze
    assert batch_problems(batch.body for batch in report.batches) == [], "docs/schemas/events/gds_*.json"


def midas_device(port: int) -> dict:
    return {"name": "gds-midas", "driver": "gds", "transport": "tcp", "host": "127.0.0.1", "port": port,
            "profile": "midas", "poll_interval": POLL, "timeout": 0.5, "heartbeat_timeout": HEARTBEAT_TIMEOUT,
            "channels": [{"channel": 1, "name": MIDAS_TAG, "gas": "H2S", "unit": "ppm", "range": [0, 50],
                          "description": "Midas-style detector"}]}


def test_a_midas_detector_decodes_as_documented_and_a_wrong_unit_is_an_error(plant_factory, midas):
    """The simulator encodes the Midas manual's map (floats low word first, unit bit in 40007); the shipped
    profile must read 12.5 ppm and the thresholds 10 and 20, and a detector switched to ppb must turn the
    channel DEVICE_ERROR with an event naming both units."""
    plant = plant_factory(tags=9, poll_interval=0.5, scan_interval=0.25, extra_devices=[midas_device(midas.port)])
    daemon = plant.start_daemon()
    midas.send("gas 1 12.5")
    wait_upstream(plant, lambda s: 12.5 in values(s, MIDAS_TAG), "the detector's 12.5 ppm")
    midas.send("unit ppb")
    wait_upstream(plant, lambda s: Quality.DEVICE_ERROR in qualities(s, MIDAS_TAG), "the unit mismatch")
    midas.send("unit ppm")
    wait_upstream(plant, lambda s: qualities(s, MIDAS_TAG)[-1] == Quality.GOOD, "the unit agreeing again")
    assert daemon.stop() == 0
    wait_quiet(plant)

    report = plant.report()
    assert report.ok, report.format()
    samples = samples_by_tag(plant)
    good = [value for _, value, quality in samples[MIDAS_TAG] if quality == Quality.GOOD]
    assert good and all(value in (0.0, 12.5) for value in good), f"GOOD values the detector never had: {good}"
    assert values(samples, f"{MIDAS_TAG}.threshold1")[-1] == 10.0
    assert values(samples, f"{MIDAS_TAG}.threshold2")[-1] == 20.0
    assert Quality.DEVICE_ERROR in qualities(samples, f"{MIDAS_TAG}.threshold1"), "thresholds share the unit"
    (mismatch,) = events_of(plant, "gds_unit_mismatch")
    assert mismatch["source"] == MIDAS_TAG and mismatch["priority"] == 3
    assert {key: mismatch["data"][key] for key in ("panel", "channel", "configured_unit", "reported_unit")} == \
        {"panel": "gds-midas", "channel": 1, "configured_unit": "ppm", "reported_unit": "ppb"}
    assert "reports ppb" in mismatch["message"] and "configured in ppm" in mismatch["message"]
    assert len(events_of(plant, "gds_unit_mismatch_cleared")) == 1
    assert batch_problems(batch.body for batch in report.batches) == []
