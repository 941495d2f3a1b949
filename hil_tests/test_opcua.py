"""The OPC UA driver against the simulated OPC UA server running as a real process on loopback.

Each test runs the driver in-process and records what it hands to a small sink. The server is killed
(SIGKILL) and restarted on the same port, frozen (SIGSTOP) and resumed, and served with security,
like a real server losing power, hanging, or being replaced by an impostor.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.opcua.client import OpcUaDriver  # noqa: E402
from gatewayd.config.model import DeviceConfig  # noqa: E402
from gatewayd.values.points import PointTable  # noqa: E402
from core.types import Quality  # noqa: E402
from hil_tests.recording import RecordingSink, load_device, stop, wait_until  # noqa: E402
from hil_tests.sim.opcua_server import DECOY, NAMESPACE, make_certificate  # noqa: E402
from hil_tests.simprocess import SimProcess  # noqa: E402
from hil_tests.sockets import open_connections  # noqa: E402

PUBLISHING = 0.2
TIMEOUT = 1.0


@pytest.fixture
def servers(sim_processes) -> Callable[..., SimProcess]:
    """Starts `python -m hil_tests.sim.opcua_server` children; all are killed after the test."""

    def start(variables: int = 5, security_dir: Path | None = None, period: float = 0.2,
              min_publishing_interval: float = 0.0, options: tuple[str, ...] = ()) -> SimProcess:
        options = ["--vars", str(variables), "--period", str(period), "--seed", "3",
                   "--min-publishing-interval", str(min_publishing_interval), *options]
        if security_dir is not None:
            options += ["--security-dir", str(security_dir)]
        return sim_processes(SimProcess(["hil_tests.sim.opcua_server"], options, "OPC UA simulator"))

    return start


def device_config(port: int, tags: list[dict[str, Any]], base: Path = ROOT, **settings: Any) -> DeviceConfig:
    """The device through the real config loader, so the test's YAML is checked like a user's."""
    return load_device({"name": "ua1", "driver": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}",
                        "security_policy": "None", "poll_interval": 0.3, "timeout": TIMEOUT,
                        "publishing_interval": PUBLISHING, "backoff_initial": 0.1, "backoff_max": 0.4, **settings,
                        "tags": tags}, base)


def generic_tags(count: int) -> list[dict[str, Any]]:
    return [{"name": f"G{i}", "node": f"ns=2;s=GEN{i:05d}"} for i in range(count)]


def start_driver(device: DeviceConfig) -> tuple[OpcUaDriver, RecordingSink, asyncio.Task]:
    sink = RecordingSink(len(device.tags))
    driver = OpcUaDriver.from_config(device, np.arange(len(device.tags)))
    return driver, sink, asyncio.create_task(driver.run(sink))


def test_values_arrive_with_source_timestamps_and_status_mapped_to_quality(servers):
    server = servers(variables=6)
    tags = [{"name": "LT101", "node": "ns=2;s=LT101", "deadband_type": "absolute", "deadband_value": 0.0001},
            *generic_tags(5),
            {"name": "POLLED", "node": "ns=2;s=GEN00005", "mode": "poll"},
            {"name": "BAD_SENSOR", "node": "ns=2;s=BAD_SENSOR"},
            {"name": "OOS", "node": "ns=2;s=OUT_OF_SERVICE", "queue_size": 5, "sampling_interval": "100ms"},
            {"name": "UNCERTAIN", "node": "ns=2;s=UNCERTAIN"},
            {"name": "TEXT", "node": "ns=2;s=TEXT"},
            {"name": "HUGE", "node": "ns=2;s=HUGE_TEXT"},
            {"name": "NAN", "node": "ns=2;s=NOT_A_NUMBER"},
            {"name": "MISSING", "node": "ns=2;s=NO_SUCH_NODE"}]
    expected = {"BAD_SENSOR": Quality.SENSOR_FAULT, "OOS": Quality.MAINTENANCE, "UNCERTAIN": Quality.UNCERTAIN,
                "TEXT": Quality.DECODE_ERROR, "HUGE": Quality.DECODE_ERROR, "NAN": Quality.OUT_OF_RANGE,
                "MISSING": Quality.DEVICE_ERROR}
    device = device_config(server.port, tags)
    names = [tag.name for tag in device.tags]
    changing = [names.index(name) for name in ("LT101", "G0", "G4", "POLLED")]

    async def scenario() -> tuple[OpcUaDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.writes[changing] >= 3).all()), 15)
            await wait_until(lambda: all(sink.quality[names.index(n)] == q for n, q in expected.items()), 5)
        finally:
            await stop(task)
        return driver, sink

    driver, sink = asyncio.run(scenario())
    good = [names.index(name) for name in ("LT101", "G0", "G1", "G2", "G3", "G4", "POLLED")]
    assert (sink.quality[good] == Quality.GOOD).all()
    assert np.isfinite(sink.values[good]).all()
    assert (np.abs(sink.source_ts[good] - time.time()) < 30).all(), "source timestamps are the server's, recent"
    assert sink.values[names.index("UNCERTAIN")] == 7.0  # uncertain keeps its value
    assert driver.stats.polled_items == 2  # POLLED, and MISSING after the server refused its monitored item
    assert driver.stats.notifications > 0 and driver.stats.polls > 0
    assert "device_down" not in sink.kinds()


def test_server_killed_and_restarted_resumes_and_outage_is_bad_quality(servers):
    server = servers()
    device = device_config(server.port, generic_tags(5))

    async def scenario() -> tuple[float, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.quality == Quality.GOOD).all()), 10)
            server.signal(signal.SIGKILL)
            await wait_until(lambda: bool((sink.quality == Quality.COMM_FAILURE).all()), 10)
            assert sink.kinds() == ["device_down"]
            before = sink.writes.copy()
            await asyncio.to_thread(server.start)
            resumed = await wait_until(lambda: bool((sink.writes > before + 1).all()
                                                    and (sink.quality == Quality.GOOD).all()), 15)
            assert driver.stats.sessions >= 2
        finally:
            await stop(task)
        return resumed, sink

    resumed, sink = asyncio.run(scenario())
    assert resumed < 10, "data resumes within seconds of the server's restart"
    assert sink.kinds() == ["device_down", "device_up"]
    assert "connection" in sink.events[0].data["cause"] or "no answer" in sink.events[0].data["cause"]


def test_frozen_server_turns_bad_by_watchdog_and_recovers_after_resume(servers):
    server = servers()
    device = device_config(server.port, generic_tags(5))

    async def scenario() -> tuple[float, float, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.quality == Quality.GOOD).all()), 10)
            server.signal(signal.SIGSTOP)
            noticed = await wait_until(lambda: bool((sink.quality == Quality.COMM_FAILURE).all()), 10)
            await asyncio.sleep(1.0)  # stays bad while frozen
            assert (sink.quality == Quality.COMM_FAILURE).all()
            before = sink.writes.copy()
            server.signal(signal.SIGCONT)
            resumed = await wait_until(lambda: bool((sink.writes > before + 1).all()
                                                    and (sink.quality == Quality.GOOD).all()), 15)
        finally:
            await stop(task)
        return noticed, resumed, sink

    noticed, resumed, sink = asyncio.run(scenario())
    assert noticed < 8 and resumed < 10
    assert sink.kinds() == ["device_down", "device_up"]


def test_frozen_server_leaves_no_connection_open_after_five_freezes(servers):
    """asyncua marks a silent session disconnected without closing its socket; the driver closes it
    itself, so after each freeze and thaw the gateway holds one connection to the server, not one more."""
    server = servers()
    # the default publishing: asyncua's own keep-alive probe notices the silence before the driver's watchdog
    device = device_config(server.port, generic_tags(3), publishing_interval=1.0)

    async def scenario() -> list[int]:
        driver, sink, task = start_driver(device)
        counts = []
        try:
            await wait_until(lambda: bool((sink.quality == Quality.GOOD).all()), 10)
            for _ in range(5):
                sessions = driver.stats.sessions
                server.signal(signal.SIGSTOP)
                await wait_until(lambda: bool((sink.quality == Quality.COMM_FAILURE).all()), 10)
                await asyncio.sleep(1.0)  # reconnect attempts meet the frozen server too
                server.signal(signal.SIGCONT)
                await wait_until(lambda before=sessions: driver.stats.sessions > before
                                 and bool((sink.quality == Quality.GOOD).all()), 15)
                await asyncio.sleep(0.5)  # the server has answered whatever the old sockets still held
                counts.append(open_connections(os.getpid(), server.port))
        finally:
            await stop(task)
        return counts

    counts = asyncio.run(scenario())
    assert counts == [1] * 5, f"open connections to the server after each thaw: {counts}"


def test_quiet_values_on_a_server_granting_a_slower_publishing_interval_stay_good(servers):
    """Asked for 500 ms, granted 2 s: keep-alives come every 6 s, not every 1.5 s. The watchdog and
    the tags' stale_after follow what the server granted, so values that never change are neither
    declared down nor STALE (the real point table judges staleness)."""
    server = servers(variables=3, period=3600.0, min_publishing_interval=2.0)  # values never change
    device = device_config(server.port, generic_tags(3), publishing_interval=0.5, keepalive_count=3)
    assert [tag.stale_after for tag in device.tags] == [2.0] * 3  # configured: (3 + 1) x 0.5 s

    async def scenario() -> tuple[OpcUaDriver, PointTable, set[int]]:
        table = PointTable(device.tags)
        driver = OpcUaDriver.from_config(device, np.arange(len(device.tags)))
        task = asyncio.create_task(driver.run(table))
        seen: set[int] = set()
        try:
            await wait_until(lambda: bool((table.quality == Quality.GOOD).all()), 10)
            for _ in range(200):  # 20 s: three keep-alive periods of the granted subscription
                table.mark_stale(time.monotonic())
                seen.update(int(quality) for quality in table.quality)
                await asyncio.sleep(0.1)
        finally:
            await stop(task)
        return driver, table, seen

    driver, table, seen = asyncio.run(scenario())
    assert seen == {Quality.GOOD}, f"qualities seen: {sorted(Quality(q).name for q in seen)}"
    assert [event.kind for event in table.pending_events] == []
    assert driver.stats.sessions == 1 and driver.stats.watchdog_trips == 0
    assert (table.stale_after == 8.0).all()  # granted: (3 + 1) x 2 s
    assert (table.configured_stale_after == 2.0).all()


@pytest.mark.parametrize("advertised", [100, 0], ids=["advertised", "unadvertised"])
def test_a_server_limited_to_100_operations_per_request_delivers_every_tag(servers, advertised):
    """260 subscribed and 260 polled tags on a server that refuses more than 100 operations a request:
    the driver keeps to the limit the server advertises, or, when it advertises none, halves its
    requests on BadTooManyOperations until they pass."""
    server = servers(variables=520, options=("--operation-limit", "100", "--advertised-limit", str(advertised)))
    tags = [*generic_tags(260), *({"name": f"P{i}", "node": f"ns=2;s=GEN{i:05d}", "mode": "poll"}
                                  for i in range(260, 520))]
    device = device_config(server.port, tags)

    async def scenario() -> tuple[OpcUaDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.writes >= 2).all() and (sink.quality == Quality.GOOD).all()), 30)
        finally:
            await stop(task)
        return driver, sink

    driver, sink = asyncio.run(scenario())
    assert np.isfinite(sink.values).all()
    assert driver.stats.sessions == 1 and driver.stats.polled_items == 260, "nothing refused, nothing lost"
    assert "device_down" not in sink.kinds()


def test_nsu_node_ids_follow_a_server_restart_that_renumbers_its_namespaces(servers):
    """Tags named by namespace URI read the simulator's nodes at index 2, and after a restart that puts
    two decoy namespaces (same node ids, value DECOY) in front of it, at index 4 — never the decoys."""
    server = servers(options=("--decoy-namespaces", "0"))
    tags = [{"name": f"G{i}", "node": f"nsu={NAMESPACE};s=GEN{i:05d}", "mode": mode}
            for i, mode in enumerate(["subscribe"] * 3 + ["poll"] * 2)]
    tags.append({"name": "NOWHERE", "node": "nsu=urn:nobody;s=GEN00000"})
    device = device_config(server.port, tags)
    named = np.arange(5)

    def real_values(sink: RecordingSink, before: np.ndarray) -> bool:
        return bool((sink.writes[named] > before[named] + 1).all()
                    and (sink.quality[named] == Quality.GOOD).all() and (sink.values[named] < DECOY).all())

    async def scenario() -> tuple[OpcUaDriver, RecordingSink, np.ndarray]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: real_values(sink, np.zeros(len(tags))), 15)
            first = sink.values[named].copy()
            server.signal(signal.SIGKILL)
            server.options[server.options.index("--decoy-namespaces") + 1] = "2"
            await asyncio.to_thread(server.start)
            before = sink.writes.copy()
            await wait_until(lambda: real_values(sink, before), 20)
            assert driver.stats.sessions >= 2
        finally:
            await stop(task)
        return driver, sink, first

    driver, sink, first = asyncio.run(scenario())
    assert (sink.values[named] < DECOY).all() and (first < DECOY).all(), "the simulator's nodes, not the decoys"
    assert sink.quality[5] == Quality.DEVICE_ERROR, "a URI the server does not have: its nodes are unknown"


def secure_setup(tmp_path: Path, trust_server: bool) -> tuple[Path, dict[str, Any]]:
    """Server certificate directory, and the device settings with a client certificate and trust store."""
    server_dir = tmp_path / "server-pki"
    make_certificate(server_dir, "server", "urn:gatewayd:sim:opcua")
    client_cert, client_key = make_certificate(tmp_path / "client-pki", "client", "urn:gatewayd:test:client")
    trust = tmp_path / "trusted"
    trust.mkdir()
    if trust_server:
        shutil.copy(server_dir / "server.der", trust / "server.der")
    else:  # a certificate of some other server: the simulator's is not in the store
        other, _ = make_certificate(tmp_path / "other-pki", "other", "urn:elsewhere")
        shutil.copy(other, trust / "other.der")
    password = tmp_path / "password"
    password.write_text("not-used-by-the-simulator\n")
    password.chmod(0o600)
    settings = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
                "certificate": str(client_cert), "private_key": str(client_key), "trust_store": "trusted",
                "username": "operator", "password_file": "password"}
    return server_dir, settings


def test_sign_and_encrypt_with_a_trusted_server_certificate(servers, tmp_path):
    server_dir, settings = secure_setup(tmp_path, trust_server=True)
    server = servers(security_dir=server_dir)
    device = device_config(server.port, generic_tags(3), base=tmp_path, **settings)
    assert device.settings.trust_store == tmp_path / "trusted"  # relative to the config file

    async def scenario() -> RecordingSink:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: bool((sink.writes >= 2).all()), 15)
        finally:
            await stop(task)
        return sink

    sink = asyncio.run(scenario())
    assert (sink.quality == Quality.GOOD).all() and np.isfinite(sink.values).all()
    assert sink.kinds() == []


def test_a_rejected_password_backs_off_to_credential_backoff_with_one_clear_line(servers, tmp_path, caplog):
    server_dir, settings = secure_setup(tmp_path, trust_server=True)
    server = servers(security_dir=server_dir, options=("--user", "operator:the-right-one"))
    device = device_config(server.port, generic_tags(3), base=tmp_path, credential_backoff="1h", **settings)

    async def scenario() -> tuple[OpcUaDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: driver.stats.failures >= 1, 15)
            await asyncio.sleep(3.0)  # backoff_max is 0.4 s: a plain failure would have been retried often
        finally:
            await stop(task)
        return driver, sink

    with caplog.at_level("WARNING", logger="gatewayd.drivers.opcua"):
        driver, sink = asyncio.run(scenario())
    assert driver.stats.failures == 1 and driver.stats.sessions == 0
    assert sink.kinds() == ["device_down"]
    assert sink.events[0].data["cause"].startswith("credentials rejected (BadUserAccessDenied")
    lines = [record.getMessage() for record in caplog.records if "rejected the credentials" in record.getMessage()]
    assert len(lines) == 1 and "operator" in lines[0] and "3600 s" in lines[0], lines
    assert (sink.quality == Quality.COMM_FAILURE).all()


def test_untrusted_server_certificate_is_refused_with_a_clear_error(servers, tmp_path):
    server_dir, settings = secure_setup(tmp_path, trust_server=False)
    server = servers(security_dir=server_dir)
    device = device_config(server.port, generic_tags(3), base=tmp_path, **settings)

    async def scenario() -> tuple[OpcUaDriver, RecordingSink]:
        driver, sink, task = start_driver(device)
        try:
            await wait_until(lambda: driver.stats.failures >= 2, 15)
        finally:
            await stop(task)
        return driver, sink

    driver, sink = asyncio.run(scenario())
    assert sink.kinds() == ["device_down"]
    cause = sink.events[0].data["cause"]
    assert "not in the trust store" in cause and str(tmp_path / "trusted") in cause
    assert driver.stats.sessions == 0 and sink.writes.sum() == 0
    assert (sink.quality == Quality.COMM_FAILURE).all()
