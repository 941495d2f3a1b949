"""A trip demand captured through the real daemon: the simulated PLC's registers are forced (as an engineer
forces values in a PLC) so that T-101's high-high level switch and then its level transmitter trip
SIS-T101 while its inlet valve stays open. Upstream, a verifying receiver must see the `trip` event with
the values the simulator served and the first-out order, the `final_element` failure, and the
`trip_history` whose readings are the simulator's values at the read times the samples carry.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from core.types import Quality
from hil_tests.conftest import Plant
from hil_tests.test_alarms import ask, force, force_level, overridable_plant, wait_for
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet

STATUS_WORD = 10  # holding register: bit 0 XV101 (inlet valve open), bit 1 LSHH101 (high-high level switch)
VALVE_OPEN, SWITCH = 0b01, 0b10
RULES = {
    "units": {"tank-farm-1": {"max_bypassed": 1}},
    "trip_history": {"interval": "0.25s"},  # below the 0.5 s poll: every read is sampled
    "interlocks": [{
        "id": "SIS-T101", "description": "T-101 high-high level closes the inlet valve", "unit": "tank-farm-1",
        "bypass": "MARKER", "protects": ["LT101"], "trip": "LT101 >= 9.8 and LSHH101", "max_bypass": "8h",
        "causes": ["LT101 >= 9.8", "LSHH101"], "history": {"before": "30s", "after": "4s"},
        "final_element": {"tag": "XV101", "expect": "XV101 == 0", "within": "2s"}}],
}
LEVELS = (5.0, 9.0, 9.5, 9.9)  # what the simulator serves for LT101, in this order


def served(metres: float) -> float:
    """LT101 as the simulator serves it: a float32."""
    return struct.unpack(">f", struct.pack(">f", metres))[0]


@pytest.fixture
def plant(tmp_path: Path):
    with overridable_plant(tmp_path, RULES) as plant:
        yield plant


def level_seen(plant: Plant, metres: float) -> bool:
    listed = {item["id"]: item for item in ask(plant, {"cmd": "alarms", "all": True}) or []}
    return listed.get("LT101.HH", {}).get("value") == served(metres)


def test_trip_event_and_history_reach_upstream_with_the_served_values(plant: Plant):
    force_level(plant, LEVELS[0])
    force(plant, STATUS_WORD, [VALVE_OPEN])
    daemon = plant.start_daemon()
    wait_for("the first poll", lambda: level_seen(plant, LEVELS[0]), plant)
    for metres in LEVELS[1:3]:
        time.sleep(1.5)
        force_level(plant, metres)
        wait_for(f"LT101 at {metres}", lambda metres=metres: level_seen(plant, metres), plant)
    force(plant, STATUS_WORD, [VALVE_OPEN | SWITCH])  # the switch first: the first out
    time.sleep(1.5)
    force_level(plant, LEVELS[3])  # the trip; the valve stays open
    wait_for("the trip", lambda: (ask(plant, {"cmd": "interlocks"}) or [{}])[0].get("trip_condition"), plant)
    time.sleep(6.0)  # the final element's 2 s and the history's 4 s after the trip
    assert daemon.stop() == 0
    wait_quiet(plant)

    report = plant.report()
    assert report.ok, report.format()
    events = [event for batch in report.batches for event in batch.body["events"]]
    samples = samples_by_tag(plant)
    [trip] = [event for event in events if event["kind"] == "trip"]
    data = trip["data"]
    assert trip["source"] == "SIS-T101" and trip["priority"] == 3
    assert [cause["cause"] for cause in data["first_out"]] == ["LSHH101", "LT101 >= 9.8"]
    assert data["values"]["LT101"]["value"] == served(9.9) and data["values"]["LT101"]["quality"] == 0
    assert (data["values"]["LSHH101"]["value"], data["values"]["XV101"]["value"]) == (1.0, 1.0)
    first_read = next(ts for ts, value, _ in samples["LT101"] if value == served(9.9))
    assert data["values"]["LT101"]["read_at"] * 1000 >= first_read - 2, "the trip's reading is a 9.9 m read"

    [failed] = [event for event in events if event["kind"] == "final_element"]
    assert (failed["data"]["event"], failed["data"]["trip_id"], failed["data"]["value"], failed["priority"]) == \
        ("failed", data["trip_id"], 1.0, 3)

    [history] = [event for event in events if event["kind"] == "trip_history"]
    assert history["data"]["trip_id"] == data["trip_id"] and set(history["data"]["tags"]) == {"LT101", "LSHH101",
                                                                                                "XV101"}
    series = {tag: points[1:] if points and points[0][2] == Quality.NO_VALUE else points
              for tag, points in history["data"]["tags"].items()}  # no value yet before the first poll, truthfully
    level = series["LT101"]
    assert [read for read, _, _ in level] == sorted({read for read, _, _ in level}), "distinct reads, in order"
    assert all(quality == 0 for _, _, quality in level), level
    assert level[0][0] >= history["data"]["trip_at"] - 30.0 and level[-1][0] <= history["data"]["trip_at"] + 4.0
    changes = [point for k, point in enumerate(level) if k == 0 or point[1] != level[k - 1][1]]
    assert [value for _, value, _ in changes][-3:] == [served(m) for m in LEVELS[1:]], \
        "the history holds the served levels in the order they were served"
    assert {value for _, value, _ in level} <= {served(m) for m in LEVELS}
    upstream = {(ts, value) for ts, value, _ in samples["LT101"]}
    for read, value, _ in changes[1:]:
        assert any(abs(read * 1000 - ts) <= 2 and value == sample for ts, sample in upstream), \
            f"each change in the history is the sample sent upstream for that read ({read}, {value}); upstream " \
            f"samples of that value: {sorted(ts for ts, sample in upstream if sample == value)}"
    assert {value for _, value, _ in series["XV101"]} == {1.0}
    switch = [value for _, value, _ in series["LSHH101"]]
    assert switch[0] == 0.0 and switch[-1] == 1.0
