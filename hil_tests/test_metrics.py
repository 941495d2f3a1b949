"""The Prometheus endpoint: figures from the live daemon that move as the plant runs, and the tables that
map every stats field the daemon keeps to a metric."""

from __future__ import annotations

import dataclasses
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gatewayd import metrics
from gatewayd.values.scan import ScanStats
from gatewayd.uplink.publisher import UplinkStats
from hil_tests.test_service import add_metrics, scrape, wait_for_scrape
from store.records import StoreStats


@pytest.mark.parametrize("stats, table, derived", [
    (ScanStats, metrics.SCAN_METRICS, set()),
    (StoreStats, metrics.STORE_METRICS, metrics.STORE_DERIVED),
    (UplinkStats, metrics.UPLINK_METRICS, metrics.UPLINK_DERIVED),
], ids=["scan", "store", "uplink"])
def test_every_stats_field_has_a_metric(stats, table, derived):
    fields = {field.name for field in dataclasses.fields(stats)}
    missing = fields - table.keys() - derived
    assert not missing, f"add {sorted(missing)} of {stats.__name__} to gatewayd/metrics.py"


def render(snapshot: dict) -> str:
    registry = CollectorRegistry(auto_describe=False)

    class Fixed:
        def collect(self):
            return metrics.families(snapshot)

    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_a_snapshot_renders_as_prometheus_text():
    text = render({
        "wall": 1000.0, "monotonic": 50.0,
        "devices": [{"name": "plc-a", "up": True, "polls": 7, "failures": 1, "last_poll_latency": 0.012},
                    {"name": "plc-b", "up": False, "polls": 0, "failures": 9, "last_poll_latency": float("nan")}],
        "scan": dataclasses.asdict(ScanStats(scans=3, samples=40, events=2, last_scan_seconds=0.004)),
        "store": dataclasses.asdict(StoreStats(5, 10, 1, 940.0, 4096, 12)),
        "uplink": {**dataclasses.asdict(UplinkStats(connected=True, acknowledged=11, last_ack_monotonic=48.0)),
                   "inflight": 1},
        "rules": {"alarms": 30, "interlocks": 2, "active": 4, "unacknowledged": 3, "shelved": 1, "suppressed": 0,
                  "out_of_service": 0, "bypassed": 1, "rules_seconds": 0.001,
                  "analytics": {"priority_split": {"high": 0.25, "medium": 0.25, "low": 0.5}}},
        "alarm_states": [("high", "UNACK", 2), ("low", "SHLVD", 1)],
    })
    for line in ['gatewayd_device_up{device="plc-a"} 1.0', 'gatewayd_device_up{device="plc-b"} 0.0',
                 'gatewayd_device_poll_failures_total{device="plc-b"} 9.0',
                 'gatewayd_device_poll_latency_seconds{device="plc-a"} 0.012',
                 "gatewayd_samples_total 40.0", "gatewayd_store_rows_pending 5.0",
                 "gatewayd_store_oldest_unacknowledged_age_seconds 60.0", "gatewayd_uplink_connected 1.0",
                 "gatewayd_uplink_batches_acknowledged_total 11.0", "gatewayd_uplink_batches_inflight 1.0",
                 "gatewayd_uplink_last_ack_age_seconds 2.0", 'gatewayd_alarms{state="unacknowledged"} 3.0',
                 "gatewayd_interlocks_bypassed 1.0",
                 'gatewayd_alarms_by_priority{priority="high",state="UNACK"} 2.0',
                 'gatewayd_alarm_priority_share{priority="high"} 0.25']:
        assert line in text.splitlines(), line
    assert 'poll_latency_seconds{device="plc-b"}' not in text, "no latency before the first answered poll"


def test_a_running_daemon_exposes_figures_that_move(plant_factory):
    plant = plant_factory(tags=50)
    port = add_metrics(plant.config)
    daemon = plant.start_daemon()
    first = wait_for_scrape(port, daemon)
    deadline = time.monotonic() + 60
    while True:
        time.sleep(2)
        later = scrape(port)
        if later["gatewayd_uplink_batches_acknowledged_total"] > first["gatewayd_uplink_batches_acknowledged_total"] \
                and later['gatewayd_device_polls_total{device="tank-plc"}'] > \
                first['gatewayd_device_polls_total{device="tank-plc"}']:
            break
        assert time.monotonic() < deadline, f"figures did not move: {later}"
    assert later['gatewayd_device_up{device="tank-plc"}'] == 1
    assert later["gatewayd_samples_total"] > first["gatewayd_samples_total"]
    assert later["gatewayd_scans_total"] > first["gatewayd_scans_total"]
    assert later["gatewayd_uplink_bytes_published_total"] > 0 and later["gatewayd_uplink_connected"] == 1
    assert later["gatewayd_store_bytes"] > 0 and "gatewayd_store_oldest_unacknowledged_age_seconds" in later
    assert later['gatewayd_device_poll_latency_seconds{device="tank-plc"}'] > 0
    assert later["process_resident_memory_bytes"] > 10_000_000
    plant.broker.stop()
    deadline = time.monotonic() + 60
    while (outage := scrape(port))["gatewayd_uplink_connected"] != 0 or outage["gatewayd_store_rows_pending"] == 0:
        assert time.monotonic() < deadline, "a broker outage shows as disconnected with rows piling up"
        time.sleep(0.5)
    assert daemon.stop() == 0
