"""The data-quality accumulator on explicit time: completeness, online share, frozen, range, rate, ages."""

from __future__ import annotations

import numpy as np
import pytest

from gatewayd.config.model import DeviceConfig, TagConfig
from gatewayd.values.dataquality import AGE_EDGES, DataQuality, TagChecks, age_quantile
from core.types import Event, Priority, Quality
from tests.uplinkschemas import event_problems

START, WALL = 1000.0, 1_700_000_000.0


class Plant:
    """A point table in miniature driven by hand: each `read` is one completed poll of the given rows."""

    def __init__(self, *tags: TagConfig, poll_interval: float = 1.0, interval: float = 3600.0):
        device = DeviceConfig("plc", "modbus_tcp", poll_interval, 1.0, None, tuple(tags))
        self.size = len(tags)
        self.value = np.full(self.size, np.nan)
        self.quality = np.full(self.size, int(Quality.NO_VALUE), dtype=np.uint8)
        self.read_at = np.full(self.size, -np.inf)
        self.reads = np.zeros(self.size, dtype=np.int64)
        self.dq = DataQuality(TagChecks.build([device], tags), START, WALL, interval)
        self.events: list[Event] = []

    def read(self, at: float, values, rows=None, quality: int = Quality.GOOD) -> list[Event]:
        rows = np.arange(self.size) if rows is None else np.asarray(rows)
        self.value[rows] = values
        self.quality[rows] = quality
        self.read_at[rows] = at
        if quality < Quality.NO_VALUE:
            self.reads[rows] += 1
        return self.tick(at)

    def tick(self, at: float) -> list[Event]:
        events = self.dq.observe(at, WALL + at - START, self.value, self.quality, self.read_at, self.reads)
        self.events += events
        return events

    def figures(self, at: float) -> dict:
        return self.dq.figures(at, self.reads, tags=True)["devices"][0]


def tag(name: str = "LT-101", **settings) -> TagConfig:
    return TagConfig(name=name, device="plc", address=None, **settings)


def test_completeness_is_one_at_exactly_the_expected_reads():
    plant = Plant(tag(), poll_interval=2.0)
    for k in range(30):  # one read every 2 s over 60 s
        plant.read(START + 2.0 * k, 1.0 + k)
    device = plant.figures(START + 60.0)
    assert device["period"]["expected_reads"] == 30.0
    assert device["period"]["reads"] == 30
    assert device["period"]["completeness"] == 1.0
    assert device["tags"][0]["period"]["completeness"] == 1.0


def test_completeness_counts_missing_reads():
    plant = Plant(tag("A"), tag("B"), poll_interval=1.0)
    for k in range(100):
        plant.read(START + k, float(k), rows=[0, 1] if k % 4 else [0])  # B misses every 4th read
    device = plant.figures(START + 100.0)
    a, b = device["tags"]
    assert a["period"]["completeness"] == 1.0
    assert b["period"]["reads"] == 75 and b["period"]["completeness"] == 0.75
    assert device["period"]["completeness"] == 175 / 200


def test_failed_reads_are_not_completed_reads():
    plant = Plant(tag(), poll_interval=1.0)
    for k in range(10):
        plant.read(START + k, 1.0, quality=Quality.COMM_FAILURE if k >= 6 else Quality.GOOD)
    assert plant.figures(START + 10.0)["period"]["reads"] == 6


def test_online_share_with_a_down_interval():
    plant = Plant(tag(), poll_interval=1.0)
    plant.read(START, 1.0)
    down = Event("device_down", WALL + 30.0, "plc", "down", Priority.HIGH)
    up = Event("device_up", WALL + 45.0, "plc", "up")
    # the scan sees each event a little after the driver raised it: the event's own time counts
    plant.dq.device_event(down, START + 31.0, WALL + 31.0)
    plant.dq.device_event(up, START + 45.5, WALL + 45.5)
    device = plant.figures(START + 100.0)
    assert device["period"]["online"] == pytest.approx(85 / 100)
    assert device["since_start"]["online"] == pytest.approx(85 / 100)
    plant.dq.device_event(Event("device_down", WALL + 100.0, "elsewhere", "down"), START + 100.0, WALL + 100.0)
    assert plant.figures(START + 100.0)["period"]["online"] == pytest.approx(85 / 100)  # another device


def test_tag_online_share_is_time_with_a_quality_that_is_not_bad():
    plant = Plant(tag(), poll_interval=1.0)
    plant.read(START, 1.0)
    plant.read(START + 40.0, 1.0, quality=Quality.COMM_FAILURE)
    plant.read(START + 50.0, 2.0, quality=Quality.STALE)  # uncertain still counts as online
    plant.tick(START + 100.0)
    assert plant.figures(START + 100.0)["tags"][0]["period"]["online"] == pytest.approx(90 / 100)


def test_frozen_is_raised_exactly_after_frozen_after_and_cleared_on_the_first_change():
    plant = Plant(tag(frozen_after=60.0), tag("FT-102"))  # FT-102 has no frozen detection
    plant.read(START, [5.0, 7.0])
    for k in range(1, 60):
        assert plant.read(START + k, [5.0, 7.0]) == []
    assert plant.tick(START + 59.999) == []
    [frozen] = plant.tick(START + 60.0)
    assert (frozen.kind, frozen.source, frozen.priority) == ("frozen", "LT-101", Priority.MEDIUM)
    assert frozen.data == {"tag": "LT-101", "device": "plc", "value": 5.0, "unchanged_since": WALL,
                           "frozen_after": 60.0}
    assert plant.read(START + 61.0, [5.0, 7.0]) == []  # still frozen: no second event
    assert plant.figures(START + 61.0)["frozen_tags"] == 1
    [unfrozen] = plant.read(START + 62.0, [5.25, 7.0])
    assert unfrozen.kind == "unfrozen" and unfrozen.data["value"] == 5.25
    assert unfrozen.data["changed_at"] == WALL + 62.0
    assert plant.tick(START + 121.9) == []
    assert [event.kind for event in plant.tick(START + 122.0)] == ["frozen"]
    assert [event.kind for event in plant.events] == ["frozen", "unfrozen", "frozen"]
    assert event_problems(plant.events) == []


def test_a_tag_without_reads_is_never_frozen_and_a_bad_one_keeps_its_state():
    plant = Plant(tag(frozen_after=10.0))
    assert plant.tick(START + 1000.0) == []
    plant.read(START + 1000.0, 3.0)
    assert [event.kind for event in plant.tick(START + 1010.0)] == ["frozen"]
    plant.read(START + 1011.0, 3.0, quality=Quality.COMM_FAILURE)
    assert plant.tick(START + 1020.0) == []  # offline: neither frozen nor unfrozen is news
    assert plant.dq.frozen[0]


@pytest.mark.parametrize("value, outside", [(0.0, False), (10.0, False), (-1e-9, True), (10.000001, True),
                                            (5.0, False)])
def test_out_of_range_at_the_bounds(value, outside):
    plant = Plant(tag(range_low=0.0, range_high=10.0))
    plant.read(START, value)
    device = plant.figures(START + 1.0)
    assert device["period"]["out_of_range"] == int(outside)
    assert device["tags"][0]["outside_range"] is outside
    assert device["outside_range_tags"] == int(outside)


def test_out_of_range_counts_reads_and_clears_with_a_read_inside():
    plant = Plant(tag(range_low=0.0, range_high=10.0), tag("X"))  # X has no range
    plant.read(START, [11.0, 1e9])
    plant.tick(START + 0.5)  # no new read: not counted again
    plant.read(START + 1.0, [12.0, 1e9])
    assert plant.figures(START + 1.5)["period"]["out_of_range"] == 2
    plant.read(START + 2.0, [9.0, 1e9])
    device = plant.figures(START + 3.0)
    assert device["outside_range_tags"] == 0 and device["period"]["out_of_range"] == 2


@pytest.mark.parametrize("step, violation", [(2.0, False), (2.0 - 2**-20, False), (2.0 + 2**-20, True),
                                             (-2.0, False), (-2.0 - 2**-20, True)])
def test_rate_limit_plus_minus_epsilon(step, violation):
    plant = Plant(tag(max_rate=4.0))
    plant.read(START, 100.0)
    plant.read(START + 0.5, 100.0 + step)  # 0.5 s later: step / 0.5 units per second
    assert plant.figures(START + 1.0)["period"]["rate_violations"] == int(violation)


def test_rate_is_measured_between_good_reads_over_their_read_times():
    plant = Plant(tag(max_rate=1.0))
    plant.read(START, 0.0)
    plant.read(START + 1.0, 0.0, quality=Quality.COMM_FAILURE)
    plant.read(START + 10.0, 9.0)  # 9 units over the 10 s since the last good read: 0.9/s
    assert plant.figures(START + 11.0)["period"]["rate_violations"] == 0


def test_age_quantiles_by_nearest_rank_on_bucket_upper_edges():
    plant = Plant(tag("A"), tag("B"))
    ages = np.array([0.05] * 50 + [0.3] * 45 + [2.0] * 5)  # p50 is 0.05, p95 is 0.3
    plant.dq.sent(np.zeros(len(ages), dtype=np.int64), ages)
    plant.dq.sent(np.array([1]), np.array([40.0]))
    a, b = plant.figures(START + 1.0)["tags"]
    edge = {age: AGE_EDGES[np.searchsorted(AGE_EDGES, age)] for age in (0.05, 0.3, 40.0)}
    assert a["period"]["sent"] == 100
    assert a["period"]["age_p50"] == edge[0.05] and 0.05 <= edge[0.05] < 0.05 * 1.26
    assert a["period"]["age_p95"] == edge[0.3] and 0.3 <= edge[0.3] < 0.3 * 1.26
    assert b["period"]["age_p50"] == b["period"]["age_p95"] == edge[40.0]
    assert plant.figures(START + 1.0)["period"]["sent"] == 101


def test_age_quantile_of_an_empty_row_is_nan_and_one_sample_is_its_own_bucket():
    ages = np.zeros((2, len(AGE_EDGES)), dtype=np.uint32)
    ages[1, 7] = 1
    result = age_quantile(ages, 0.95)
    assert np.isnan(result[0]) and result[1] == AGE_EDGES[7]


def test_report_closes_the_period_and_keeps_since_start():
    plant = Plant(tag(frozen_after=1e6), poll_interval=1.0, interval=60.0)
    for k in range(60):
        plant.read(START + k, float(k))
    assert not plant.dq.due(START + 59.9) and plant.dq.due(START + 60.0)
    [event] = plant.dq.report(START + 60.0, WALL + 60.0, plant.reads)
    assert (event.kind, event.source, event.ts) == ("data_quality", "plc", WALL + 60.0)
    assert event.data["period_start"] == WALL and event.data["period_end"] == WALL + 60.0
    assert event.data["period"]["reads"] == 60 and event.data["period"]["completeness"] == 1.0
    assert event.data["period"]["online"] == 1.0
    assert (event.data["part"], event.data["parts"]) == (1, 1)
    assert event.data["tags"][0]["tag"] == "LT-101" and event.data["tags"][0]["period"]["reads"] == 60
    assert event_problems([event]) == []
    for k in range(60, 90):  # the next period: half the reads
        if k % 2:
            plant.read(START + k, float(k))
    device = plant.figures(START + 90.0)
    assert device["period"]["reads"] == 15 and device["period"]["completeness"] == 0.5
    assert device["since_start"]["reads"] == 75 and device["since_start"]["completeness"] == 75 / 90


def test_a_stale_tag_is_not_judged_frozen():
    plant = Plant(tag(frozen_after=10.0))
    plant.read(START, 3.0)
    plant.read(START + 5.0, 3.0, quality=Quality.STALE)
    assert plant.tick(START + 20.0) == []
    assert [event.kind for event in plant.read(START + 21.0, 3.0)] == ["frozen"]


def test_the_point_table_counts_completed_reads_per_row():
    from gatewayd.values.points import PointTable

    table = PointTable([tag("A"), tag("B"), tag("C")])
    table.write(np.array([0, 1]), np.array([1.0, 2.0]))  # one quality for all rows
    table.write(np.array([1, 2]), np.array([2.0, 3.0]), np.array([Quality.GOOD, Quality.DECODE_ERROR]))
    table.write(np.array([0]), np.array([1.0]), Quality.COMM_FAILURE)
    table.write(np.array([2]), np.array([3.0]), Quality.STALE)  # uncertain: a read that completed
    table.set_quality(np.array([0, 1, 2]), Quality.COMM_FAILURE)  # marks, reads nothing
    assert table.reads.tolist() == [1, 2, 1]
    table.write(np.array([0]), np.array([1.0]))
    table.confirm(np.array([0, 1]))  # a publish confirms the value of row 0; row 1 is bad and waits
    assert table.reads.tolist() == [3, 2, 1]


def test_the_figures_become_prometheus_families_per_device_and_window():
    from gatewayd.metrics import data_quality_families

    plant = Plant(tag(range_low=0.0, range_high=1.0, frozen_after=5.0), poll_interval=1.0)
    for k in range(10):
        plant.read(START + k, 2.0)  # outside its range, never changing: frozen after 5 s
    plant.dq.sent(np.array([0, 0]), np.array([0.05, 0.05]))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in data_quality_families(plant.dq.figures(START + 10.0, plant.reads))
               for sample in family.samples}
    period = (("device", "plc"), ("window", "period"))
    assert samples[("gatewayd_data_completeness", period)] == 1.0
    assert samples[("gatewayd_data_online_share", period)] == 1.0
    assert samples[("gatewayd_data_out_of_range_reads", period)] == 10
    assert samples[("gatewayd_data_age_seconds", (("device", "plc"), ("quantile", "0.5"), ("window", "period")))] == \
        AGE_EDGES[np.searchsorted(AGE_EDGES, 0.05)]
    assert samples[("gatewayd_data_frozen_tags", (("device", "plc"),))] == 1
    assert samples[("gatewayd_data_outside_range_tags", (("device", "plc"),))] == 1


def test_expected_reads_follow_the_poll_interval_or_the_opc_ua_keepalive_period():
    from drivers.opcua.config import OpcUaNode, OpcUaSettings
    from gatewayd.values.dataquality import expected_interval

    settings = OpcUaSettings("opc.tcp://10.0.0.5:4840", publishing_interval=0.5, keepalive_count=4)
    server = DeviceConfig("ua", "opcua", 3.0, 1.0, settings, ())
    subscribed = TagConfig("TT-1", "ua", OpcUaNode("ns=2;s=T", mode="subscribe"))
    polled = TagConfig("TT-2", "ua", OpcUaNode("ns=2;s=U", mode="poll"))
    assert expected_interval(server, subscribed) == 2.0  # a publish, data or keep-alive, every 4 x 0.5 s
    assert expected_interval(server, polled) == 3.0
    plc = DeviceConfig("plc", "modbus_tcp", 0.25, 1.0, None, ())
    assert expected_interval(plc, tag()) == 0.25


def test_ages_waiting_in_the_buffer_are_counted_whether_it_fills_or_not(monkeypatch):
    monkeypatch.setattr("gatewayd.values.dataquality.AGE_CELLS_WAITING", 8)
    plant = Plant(tag("A"), tag("B"))
    plant.dq.sent(np.array([0] * 5), np.full(5, 0.05))
    plant.dq.sent(np.array([1] * 5), np.full(5, 2.0))  # the buffer is full: the first five are counted
    plant.dq.sent(np.array([0] * 20), np.full(20, 0.05))  # more than the buffer holds: counted at once
    a, b = plant.figures(START + 1.0)["tags"]
    assert (a["period"]["sent"], b["period"]["sent"]) == (25, 5)
    assert b["period"]["age_p50"] == AGE_EDGES[np.searchsorted(AGE_EDGES, 2.0)]
