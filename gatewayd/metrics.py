"""Prometheus metrics, read from the live objects at scrape time: nothing is counted on the hot path.

The drivers, scanner, store and publisher already keep their counters; a scrape takes one consistent
snapshot of them on the event loop (`snapshot`, where the store may be used) and turns it into the
exposition text in one thread of its own (`families`, a pure function, then prometheus_client's
encoders). A stalled event loop therefore shows as a failed scrape, not as stale figures.

The HTTP server is the daemon's own, on its event loop, because the endpoint is open to every local
account (gatewayd.peerlimits): at most `limits.metrics_connections` connections, each closed after one
answer or when its request is not complete within `limits.metrics_header_timeout` or longer than
`limits.metrics_request_bytes`; refused connections cost one log line per peer and period. A fault
while answering is answered 500 and logged the same way; polling never depends on it.

    server = MetricsServer(daemon, config.metrics, config.limits, reserve)
    await server.start()    # raises OSError when the address is taken
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from gatewayd.config.model import ACCEPT_BURST, LimitsConfig, MetricsConfig
from gatewayd.operator.control import SOCKET_UMASK, peer_account, peer_of, remove_stale_socket
from gatewayd.peerlimits import DescriptorReserve, RefusalLog, Slots

METRICS_PATHS = ("/metrics", "/")
HEADER_END = b"\r\n\r\n"

# field of a driver's `stats` (drivers.kit.DriverStats) -> (metric name, kind, help); None and NaN are left out
DEVICE_METRICS = {
    "polls": ("gatewayd_device_polls_total", "counter", "polls in which the device answered"),
    "failures": ("gatewayd_device_poll_failures_total", "counter", "failed polls and connection attempts"),
    "reconnects": ("gatewayd_device_reconnects_total", "counter", "connections made after the first"),
    "block_errors": ("gatewayd_device_block_errors_total", "counter",
                     "register blocks that failed while others were read"),
    "collisions": ("gatewayd_device_rtu_collisions_total", "counter",
                   "RTU replies lost to two frames, or a frame and trailing bytes, in one window"),
    "decode_errors": ("gatewayd_device_decode_errors_total", "counter",
                      "answers that were not a valid answer to their request (wrong length, function, unit, "
                      "transaction id, CRC, undecodable frame)"),
    "skipped_ticks": ("gatewayd_device_skipped_ticks_total", "counter", "poll ticks lost to overrunning polls"),
    "last_poll_latency": ("gatewayd_device_poll_latency_seconds", "gauge", "duration of the last answered poll"),
    "requests_per_poll": ("gatewayd_device_requests_per_poll", "gauge", "read requests one poll makes"),
    # subscribed devices (mqtt) only; other drivers have no such field and are left out
    "messages_dropped": ("gatewayd_device_messages_dropped_total", "counter",
                         "subscribed messages a full queue dropped (each reported upstream in a gap event)"),
    "out_of_order": ("gatewayd_device_out_of_order_total", "counter",
                     "readings stamped earlier than their tag's newest, kept and flagged UNCERTAIN"),
    "sparkplug_seq_gaps": ("gatewayd_device_sparkplug_seq_gaps_total", "counter",
                           "Sparkplug B sequence breaks that made a node's tags STALE until its next birth"),
    "sparkplug_ignored": ("gatewayd_device_sparkplug_ignored_total", "counter",
                          "Sparkplug B messages ignored for want of a valid birth since a death or a gap"),
}

# ScanStats field -> (metric name, kind, help)
SCAN_METRICS = {
    "scans": ("gatewayd_scans_total", "counter", "scan ticks run"),
    "samples": ("gatewayd_samples_total", "counter", "samples committed to the store"),
    "events": ("gatewayd_events_total", "counter", "events committed to the store"),
    "last_rules_seconds": ("gatewayd_rules_seconds", "gauge", "time the rule kernels took in the last scan"),
    "last_scan_seconds": ("gatewayd_scan_seconds", "gauge", "time the last scan took, store commit included"),
    "state_saves": ("gatewayd_rule_state_saves_total", "counter", "alarm and bypass state saved to the store"),
    "stale": ("gatewayd_tags_turned_stale_total", "counter", "times a tag turned STALE, not refreshed within "
              "its stale_after"),
    "reads_dropped": ("gatewayd_every_read_dropped_total", "counter", "reads of report: every_read tags dropped "
                      "because the scan fell too far behind (each also in a gap event)"),
}

# StoreStats field -> (metric name, kind, help); `oldest_pending_ts` becomes an age, see store_families
STORE_METRICS = {
    "rows_pending": ("gatewayd_store_rows_pending", "gauge", "rows in no batch yet"),
    "rows_inflight": ("gatewayd_store_rows_inflight", "gauge", "rows in batches not yet acknowledged"),
    "batches_pending": ("gatewayd_store_batches_pending", "gauge", "batches built and not yet acknowledged"),
    "db_bytes": ("gatewayd_store_bytes", "gauge", "database and WAL size on disk"),
    "used_bytes": ("gatewayd_store_used_bytes", "gauge", "bytes the disk budget counts"),
    "last_seq": ("gatewayd_store_last_seq", "gauge", "sequence number of the newest batch"),
    "evicted": ("gatewayd_store_evicted_samples_total", "counter",
                "samples evicted or thinned for the disk budget, over the database's life"),
    "gap_records": ("gatewayd_store_gap_records_total", "counter", "gap records written for evictions"),
    "history_bytes": ("gatewayd_store_history_bytes", "gauge",
                      "bytes the local history's days take (history.max_bytes)"),
    "history_days": ("gatewayd_store_history_days", "gauge", "days kept in the local history"),
}
STORE_DERIVED = {"oldest_pending_ts"}

# UplinkStats field -> (metric name, kind, help); `last_ack_monotonic` becomes an age, see uplink_families
UPLINK_METRICS = {
    "connected": ("gatewayd_uplink_connected", "gauge", "1 while connected to the broker"),
    "connects": ("gatewayd_uplink_connects_total", "counter", "connections to the broker"),
    "disconnects": ("gatewayd_uplink_disconnects_total", "counter", "broker connections lost"),
    "batches_published": ("gatewayd_uplink_batches_published_total", "counter", "batches published"),
    "republished": ("gatewayd_uplink_batches_republished_total", "counter",
                    "batches published again after an acknowledgement timeout"),
    "acknowledged": ("gatewayd_uplink_batches_acknowledged_total", "counter", "batches the broker acknowledged"),
    "rows_acknowledged": ("gatewayd_uplink_rows_acknowledged_total", "counter",
                          "samples and events deleted after acknowledgement"),
    "bytes_published": ("gatewayd_uplink_bytes_published_total", "counter", "envelope bytes published"),
    "rejected": ("gatewayd_uplink_batches_rejected_total", "counter", "batches the broker refused"),
    "live_batches": ("gatewayd_uplink_live_batches_total", "counter",
                     "batches of the newest rows sent between backfill batches"),
    "throttled": ("gatewayd_uplink_throttled_total", "counter", "sends held back by the upstream rate limit"),
    "heartbeats": ("gatewayd_uplink_heartbeats_total", "counter", "signed heartbeats published (uplink.heartbeat)"),
    "store_errors": ("gatewayd_uplink_store_errors_total", "counter",
                     "store errors (disk full) while building or acknowledging batches"),
}
UPLINK_DERIVED = {"last_ack_monotonic"}

# data-quality figure -> (metric name, help); each per device and window (period, since_start)
DATA_QUALITY_METRICS = {
    "online": ("gatewayd_data_online_share", "share of the window the device was up (0 to 1)"),
    "completeness": ("gatewayd_data_completeness", "completed reads / expected reads of the device's tags (0 to 1)"),
    "reads": ("gatewayd_data_reads", "completed reads of the device's tags in the window"),
    "expected_reads": ("gatewayd_data_expected_reads", "reads the poll or publishing interval asked for"),
    "sent": ("gatewayd_data_samples_sent", "samples of the device's tags handed to the broker in the window"),
    "out_of_range": ("gatewayd_data_out_of_range_reads", "reads outside the tag's range"),
    "rate_violations": ("gatewayd_data_rate_violations", "reads that moved faster than the tag's max_rate"),
}
DATA_QUALITY_NOW = {
    "frozen_tags": ("gatewayd_data_frozen_tags", "tags now frozen (unchanged longer than frozen_after)"),
    "outside_range_tags": ("gatewayd_data_outside_range_tags", "tags whose latest read is outside their range"),
}

ALARM_STATES = ("active", "unacknowledged", "shelved", "suppressed", "out_of_service")


def snapshot(daemon: Any) -> dict[str, Any]:
    """Plain figures from the live objects; call on the event loop thread (the store is not thread-safe)."""
    devices = []
    for name, driver in daemon.drivers.items():
        stats = asdict(driver.stats)
        figures = {key: stats.get(key) for key in DEVICE_METRICS}
        devices.append({"name": name, "up": not driver.is_down, **figures})
    engine = daemon.scanner.engine
    return {
        "wall": time.time(),
        "monotonic": time.monotonic(),
        "devices": devices,
        "scan": asdict(daemon.scanner.stats),
        "store": asdict(daemon.store.stats()),
        "uplink": {**asdict(daemon.publisher.stats), "inflight": daemon.publisher.inflight},
        "rules": engine.metrics(),
        "alarm_states": engine.state_counts(),
        "data_quality": data_quality_figures(daemon),
    }


def data_quality_figures(daemon: Any) -> dict[str, Any] | None:
    """The data-quality figures of the current period and since start (gatewayd.values.dataquality)."""
    quality = daemon.scanner.data_quality
    return quality.figures(time.monotonic(), daemon.table.reads) if quality is not None else None


def _family(name: str, kind: str, help_text: str, labels: Iterable[str] = ()) -> Metric:
    # prometheus_client appends _total to counters itself
    if kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(labels))
    return GaugeMetricFamily(name, help_text, labels=list(labels))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _table(figures: dict[str, Any], table: dict[str, tuple[str, str, str]]) -> Iterator[Metric]:
    for key, (name, kind, help_text) in table.items():
        value = _number(figures.get(key))
        if value is not None:
            family = _family(name, kind, help_text)
            family.add_metric([], value)
            yield family


def device_families(devices: list[dict[str, Any]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("gatewayd_device_up", "1 while the device answers its polls", labels=["device"])
    for device in devices:
        up.add_metric([device["name"]], float(device["up"]))
    yield up
    for key, (name, kind, help_text) in DEVICE_METRICS.items():
        family = _family(name, kind, help_text, ["device"])
        for device in devices:
            value = _number(device.get(key))
            if value is not None:
                family.add_metric([device["name"]], value)
        yield family


def store_families(store: dict[str, Any], wall: float) -> Iterator[Metric]:
    yield from _table(store, STORE_METRICS)
    oldest = store.get("oldest_pending_ts")
    age = GaugeMetricFamily("gatewayd_store_oldest_unacknowledged_age_seconds",
                            "age of the oldest row not yet acknowledged; 0 when none waits")
    age.add_metric([], max(0.0, wall - oldest) if oldest is not None else 0.0)
    yield age


def uplink_families(uplink: dict[str, Any], monotonic: float) -> Iterator[Metric]:
    yield from _table(uplink, UPLINK_METRICS)
    inflight = GaugeMetricFamily("gatewayd_uplink_batches_inflight", "batches published, awaiting acknowledgement")
    inflight.add_metric([], uplink["inflight"])
    yield inflight
    if uplink.get("last_ack_monotonic"):
        since = GaugeMetricFamily("gatewayd_uplink_last_ack_age_seconds", "time since the last acknowledgement")
        since.add_metric([], max(0.0, monotonic - uplink["last_ack_monotonic"]))
        yield since


def rules_families(rules: dict[str, Any], states: list[tuple[str, str, int]]) -> Iterator[Metric]:
    """From the rules engine: alarms by condition and by priority and ISA state, bypassed interlocks, rule time."""
    alarms = GaugeMetricFamily("gatewayd_alarms", "alarms in each condition", labels=["state"])
    for state in ALARM_STATES:
        alarms.add_metric([state], float(rules.get(state, 0)))
    yield alarms
    by_priority = GaugeMetricFamily("gatewayd_alarms_by_priority",
                                    "alarms outside NORM by priority and ISA-18.2 state (UNACK, ACKED, RTNUN, "
                                    "SHLVD, DSUPR, OOSRV)", labels=["priority", "state"])
    for priority, state, count in states:
        by_priority.add_metric([priority, state], float(count))
    yield by_priority
    for key, name, help_text in (("alarms", "gatewayd_alarms_configured", "alarms the rules define"),
                                 ("interlocks", "gatewayd_interlocks_configured", "interlocks supervised"),
                                 ("bypassed", "gatewayd_interlocks_bypassed", "interlocks now bypassed"),
                                 ("rules_seconds", "gatewayd_rule_engine_seconds", "last rule evaluation time")):
        value = _number(rules.get(key))
        if value is not None:
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
    analytics = rules.get("analytics") or {}
    split = analytics.get("priority_split") or {}
    if split:
        family = GaugeMetricFamily("gatewayd_alarm_priority_share",
                                   "share of alarm occurrences by priority band since start", labels=["priority"])
        for band, share in split.items():
            family.add_metric([band], float(share))
        yield family


def data_quality_families(figures: dict[str, Any] | None) -> Iterator[Metric]:
    """Per device and window: online share, completeness, reads, ages (p50, p95), accuracy counts."""
    if figures is None:
        return
    devices = figures["devices"]
    for key, (name, help_text) in DATA_QUALITY_METRICS.items():
        family = GaugeMetricFamily(name, help_text, labels=["device", "window"])
        for device in devices:
            for window in ("period", "since_start"):
                value = _number(device[window][key])
                if value is not None:
                    family.add_metric([device["device"], window], value)
        yield family
    ages = GaugeMetricFamily("gatewayd_data_age_seconds", "age of samples when handed to the broker, by quantile "
                             "(upper edge of a bucket 1.26x wide)", labels=["device", "window", "quantile"])
    for device in devices:
        for window in ("period", "since_start"):
            for key, quantile in (("age_p50", "0.5"), ("age_p95", "0.95")):
                value = _number(device[window][key])
                if value is not None:
                    ages.add_metric([device["device"], window, quantile], value)
    yield ages
    for key, (name, help_text) in DATA_QUALITY_NOW.items():
        family = GaugeMetricFamily(name, help_text, labels=["device"])
        for device in devices:
            family.add_metric([device["device"]], float(device[key]))
        yield family


def families(snap: dict[str, Any]) -> list[Metric]:
    """Every gatewayd metric family of one snapshot (a pure function: tested without a daemon)."""
    return [*device_families(snap["devices"]), *_table(snap["scan"], SCAN_METRICS),
            *store_families(snap["store"], snap["wall"]), *uplink_families(snap["uplink"], snap["monotonic"]),
            *rules_families(snap["rules"], snap["alarm_states"]), *data_quality_families(snap.get("data_quality"))]


class SnapshotCollector:
    """A prometheus_client collector of one snapshot's families."""

    def __init__(self, snap: dict[str, Any]):
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        return iter(families(self.snap))


def render(snap: dict[str, Any], accept: str) -> tuple[bytes, str]:
    """The exposition (text format, or OpenMetrics when `accept` asks for it) of the process's and the
    snapshot's metrics, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu, open fds
    registry.register(SnapshotCollector(snap))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class BadRequest(Exception):
    """A request the endpoint does not serve: the HTTP status and why."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


def parse_request(head: bytes) -> tuple[str, str]:
    """The method and the Accept header of a request head; BadRequest for anything but GET or HEAD of
    /metrics (or /)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("400 Bad Request", "not an HTTP request")
    method, target = parts[0], parts[1].partition("?")[0]
    if method not in ("GET", "HEAD"):
        raise BadRequest("405 Method Not Allowed", f"method {method[:20]!r}")
    if target not in METRICS_PATHS:
        raise BadRequest("404 Not Found", f"path {target[:100]!r}")
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return method, accept


def response(status: str, content_type: str, body: bytes, include_body: bool = True) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode("latin-1")
    return head + body if include_body else head


class MetricsServer:
    """The HTTP endpoint, on the event loop, with process and daemon metrics; one answer per connection."""

    def __init__(self, daemon: Any, where: MetricsConfig, limits: LimitsConfig,
                 reserve: DescriptorReserve | None = None):
        self.daemon, self.where, self.limits = daemon, where, limits
        self.host, self.port = where.host, where.port
        self.slots = Slots(limits.metrics_connections, None, reserve)
        self.refusals = RefusalLog("metrics endpoint", limits.refusal_log_interval)
        self._renderer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics")
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        limit = self.limits.metrics_request_bytes
        if self.where.socket is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=limit,
                                                      backlog=ACCEPT_BURST)
            self.port = self._server.sockets[0].getsockname()[1]
            return
        path = self.where.socket
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        remove_stale_socket(path)
        previous = os.umask(SOCKET_UMASK)
        try:
            self._server = await asyncio.start_unix_server(self._serve, str(path), limit=limit, backlog=ACCEPT_BURST)
        finally:
            os.umask(previous)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None
        self._renderer.shutdown(wait=False, cancel_futures=True)
        if self.where.socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.where.socket.unlink()

    def _peer(self, writer: asyncio.StreamWriter) -> str:
        if self.where.socket is not None:
            return peer_account(peer_of(writer.get_extra_info("socket")))
        return f"address {writer.get_extra_info('peername')[0]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = self._peer(writer)
        refusal = self.slots.admit(peer)
        if refusal is not None:
            self.refusals.refused(peer, refusal)
            writer.transport.abort()  # nothing read, nothing answered: the descriptor goes back now
            return
        self._writers.add(writer)
        try:
            await self._exchange(reader, writer, peer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or does not take its answer
        except Exception as exc:  # noqa: BLE001 - the endpoint answers 500 and the daemon carries on
            self.refusals.refused(peer, f"scrape failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                writer.write(response("500 Internal Server Error", "text/plain", b"scrape failed\n"))
        finally:
            self._writers.discard(writer)
            self.slots.release(peer)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        limits = self.limits
        try:
            async with asyncio.timeout(limits.metrics_header_timeout):
                head = await reader.readuntil(HEADER_END)
            method, accept = parse_request(head)
        except TimeoutError:
            self.refusals.refused(peer, f"request not complete within {limits.metrics_header_timeout:g} s "
                                        "(limits.metrics_header_timeout)")
            return
        except asyncio.LimitOverrunError:
            self.refusals.refused(peer, f"request header longer than {limits.metrics_request_bytes} bytes "
                                        "(limits.metrics_request_bytes)")
            writer.write(response("431 Request Header Fields Too Large", "text/plain", b"header too large\n"))
            return
        except BadRequest as exc:
            self.refusals.refused(peer, str(exc))
            writer.write(response(exc.status, "text/plain", f"{exc.status}\n".encode()))
            return
        snap = snapshot(self.daemon)
        body, content_type = await asyncio.get_running_loop().run_in_executor(self._renderer, render, snap, accept)
        writer.write(response("200 OK", content_type, body, include_body=method == "GET"))
        async with asyncio.timeout(limits.metrics_header_timeout):
            await writer.drain()
