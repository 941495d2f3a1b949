"""Every event kind of docs/uplink.md's events table has a schema under docs/schemas/events/, and the events the
real producers emit pass it once on the wire (`tests.uplinkschemas.event_problems`).

Most kinds are checked where an existing test already drives their producer: every scan of the rules tests
(test_rules_trips, test_rules_scenarios, test_rules_bypass, test_rules_managed), the operator commands' audit
records (test_control), the store's gap, store_full and store_resumed (test_store_retention), history_dropped
(test_history_plant), data_quality, frozen and unfrozen (test_dataquality), config_rejected and driver_crashed
(test_operate), the inboxes' gaps (test_mqtt_inbox, test_websocket_decode, test_every_read), the GDS panel's
events (hil_tests/test_gds.py) and a real daemon's batches (hil_tests/test_uplink_protocol.py). This module
holds what no other test produced: the location fields of every shipped driver's device_down and device_up, and
every bypass event's end."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

import drivers
from core.types import Event, Quality
from drivers.kit import DeviceHealth
from gatewayd.config import load_config
from tests.test_rules_fixtures import ROWS, build, point_table
from tests.uplinkschemas import event_kinds_with_schema, event_problems

ROOT = Path(__file__).resolve().parent.parent
UPLINK_DOC = ROOT / "docs" / "uplink.md"
WALL = 1_700_000_000.0

# docs/uplink.md's events table: where each shipped driver kind says it is
LOCATION = {
    "modbus_tcp": {"host", "port", "unit_id"},
    "modbus_udp": {"host", "port", "unit_id"},
    "modbus_rtu_over_tcp": {"host", "port", "unit_id"},
    "gds": {"host", "port", "unit_id"},
    "opcua": {"endpoint"},
    "opcda_gateway": {"host", "port", "server"},
    "websocket": {"url"},
    "mqtt": {"host", "port"},
}


def documented_kinds() -> set[str]:
    """The kinds in the first column of the events table (a row may name two, `alarm`, `gas_alarm`)."""
    section = UPLINK_DOC.read_text(encoding="utf-8").split("\n## Events\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {kind for row in rows for kind in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


def test_every_kind_the_table_lists_has_a_schema_and_no_other():
    assert {"alarm", "gas_alarm", "gds_fault", "gds_fault_cleared", "unfrozen"} <= documented_kinds()
    assert documented_kinds() == event_kinds_with_schema()


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def event(self, event: Event) -> None:
        self.events.append(event)


def healths(thing: Any, depth: int = 3) -> list[DeviceHealth]:
    """The DeviceHealth objects a driver holds (an RTU bus has one for the bus and one per unit)."""
    if isinstance(thing, DeviceHealth):
        return [thing]
    if depth == 0 or isinstance(thing, (str, bytes, int, float, np.ndarray)):
        return []
    if isinstance(thing, dict):
        children = list(thing.values())
    elif isinstance(thing, (list, tuple)):
        children = list(thing)
    else:
        children = list(getattr(thing, "__dict__", {}).values())
    return [health for child in children for health in healths(child, depth - 1)]


def test_every_shipped_driver_says_where_it_is_when_it_goes_down_and_up():
    config = load_config(ROOT / "config.example.yaml")
    seen = set()
    for device in config.devices:
        driver = drivers.create(device, np.arange(len(device.tags), dtype=np.int64))
        found = healths(driver)
        assert found, device.driver
        for health in found:
            health.log = logging.getLogger("test.event_schemas")
            sink = Sink()
            health.down(sink, "no response within 1 s", Quality.COMM_FAILURE)
            health.up(sink)
            down, up = sink.events
            assert (down.kind, up.kind) == ("device_down", "device_up")
            where = set(down.data) - {"cause", "quality"}
            if device.driver == "modbus_rtu":
                assert where in ({"port"}, {"port", "unit_id"}), "the bus, or one unit on it"
            else:
                assert where == LOCATION[device.driver], device.driver
            assert set(up.data) - {"down_for"} == where
            assert event_problems(sink.events) == []
        seen.add(device.driver)
    assert seen == set(drivers.DRIVERS)


def test_the_fixture_plants_bypasses_and_their_ends():
    """Every bypass event of an interlock and of a unit, raised and cleared, through the engine."""
    engine = build(now=0.0, wall=WALL)
    values, quality = point_table()
    events, now = [], 0.0

    def scan(seconds: float = 1.0, **changes) -> None:
        nonlocal now
        now += seconds
        for name, value in changes.items():
            values[ROWS[name]] = value
        events.extend(engine.evaluate(values, quality, now, WALL + now))

    scan(XS101=1.0)  # SIS-101 bypassed without an authorization
    scan(XS102=0.0)  # SIS-102 too: more than U100 allows
    scan(PT101=90.0)  # SIS-101's trip condition while bypassed
    scan(PT101=50.0)
    quality[ROWS["XS101"]] = 17
    scan(XS101=0.0)  # its bypass status unreadable
    quality[ROWS["XS101"]] = 0
    scan(XS101=1.0)
    scan(11.0)  # bypassed longer than SIS-101's max_bypass (10 s)
    scan(XS101=0.0, XS102=1.0)
    seen = {event.data["event"] for event in events if event.kind == "bypass"}
    assert {"started", "ended", "unauthorized", "unauthorized_cleared", "trip_while_bypassed",
            "trip_while_bypassed_cleared", "status_bad", "status_bad_cleared", "overdue", "overdue_cleared",
            "too_many", "too_many_cleared"} <= seen, seen
    assert event_problems(events) == []
