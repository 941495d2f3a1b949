"""The metrics endpoint's own HTTP server: what it answers, its connection cap, header deadline and size limit,
the Unix socket variant, and a failing scrape that leaves the server (and the daemon) running.

The daemon's snapshot is replaced by a fixed one (the real daemon's figures are hil_tests/test_metrics.py's);
the server runs on an event loop in a thread, clients are plain sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd import metrics
from gatewayd.config.model import LimitsConfig, MetricsConfig
from gatewayd.values.scan import ScanStats
from gatewayd.uplink.publisher import UplinkStats
from store.records import StoreStats

LIMITS = LimitsConfig(metrics_connections=2, metrics_header_timeout=0.5, metrics_request_bytes=512)
SNAPSHOT = {
    "wall": 1000.0, "monotonic": 50.0,
    "devices": [{"name": "plc-a", "up": True, "polls": 7, "failures": 1, "last_poll_latency": 0.012}],
    "scan": dataclasses.asdict(ScanStats(scans=3, samples=40)),
    "store": dataclasses.asdict(StoreStats(5, 10, 1, 940.0, 4096, 12)),
    "uplink": {**dataclasses.asdict(UplinkStats(connected=True)), "inflight": 0},
    "rules": {"alarms": 1}, "alarm_states": [],
}
GET = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Endpoint:
    """A MetricsServer on an event loop thread; `connect()` opens a client socket to it."""

    def __init__(self, where: MetricsConfig):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = metrics.MetricsServer(None, where, LIMITS)
        self.run(self.server.start())

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def connect(self) -> socket.socket:
        if self.server.where.socket is not None:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(self.server.where.socket))
        else:
            sock = socket.create_connection((self.server.host, self.server.port))
        sock.settimeout(5)
        return sock

    def ask(self, request: bytes = GET) -> bytes:
        with self.connect() as sock:
            sock.sendall(request)
            return read_all(sock)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def endpoint(monkeypatch) -> Iterator[Endpoint]:
    monkeypatch.setattr(metrics, "snapshot", lambda daemon: SNAPSHOT)
    served = Endpoint(MetricsConfig("127.0.0.1", 0))
    yield served
    served.close()


def refusal_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "gatewayd.limits"]


def test_a_scrape_gets_the_exposition_text(endpoint: Endpoint):
    head, _, body = endpoint.ask().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert b"Content-Type: text/plain; version=0.0.4" in head and f"Content-Length: {len(body)}".encode() in head
    lines = body.decode().splitlines()
    assert 'gatewayd_device_up{device="plc-a"} 1.0' in lines and "gatewayd_samples_total 40.0" in lines
    assert any(line.startswith("process_open_fds ") for line in lines)
    openmetrics = endpoint.ask(b"GET / HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    assert b"application/openmetrics-text" in openmetrics and openmetrics.endswith(b"# EOF\n")
    head_only = endpoint.ask(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head_only.startswith(b"HTTP/1.1 200 OK") and head_only.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /metrics HTTP/1.1\r\n\r\n", b"405 Method Not Allowed"),
    (b"GET /admin HTTP/1.1\r\n\r\n", b"404 Not Found"),
    (b"hello there\r\n\r\n", b"400 Bad Request"),
    (b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"x" * 512 + b"\r\n\r\n", b"431 Request Header Fields Too Large"),
])
def test_what_is_not_a_scrape_is_refused(endpoint: Endpoint, request_bytes: bytes, status: bytes):
    assert endpoint.ask(request_bytes).startswith(b"HTTP/1.1 " + status)


def test_connections_are_capped_and_idle_ones_closed_at_the_header_deadline(endpoint: Endpoint, caplog):
    caplog.set_level(logging.INFO)
    idle = [endpoint.connect() for _ in range(LIMITS.metrics_connections)]
    idle[0].sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request head
    with endpoint.connect() as over:
        assert read_all(over) == b"", "the connection over the cap is closed without an answer"
    for sock in idle:
        assert read_all(sock) == b"", "closed at the header deadline"
        sock.close()
    assert endpoint.ask().startswith(b"HTTP/1.1 200 OK"), "the places are free again"
    assert refusal_lines(caplog) == ["metrics endpoint: refused address 127.0.0.1: all 2 connections are taken; "
                                     "next report in 60 s at most"], "the two timeouts are counted, not logged"


def test_a_failing_scrape_answers_500_and_the_next_one_works(endpoint: Endpoint, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(metrics, "snapshot", lambda daemon: {"devices": "not a list"})
    assert endpoint.ask().startswith(b"HTTP/1.1 500 Internal Server Error")
    monkeypatch.setattr(metrics, "snapshot", lambda daemon: SNAPSHOT)
    assert endpoint.ask().startswith(b"HTTP/1.1 200 OK")
    assert len(refusal_lines(caplog)) == 1 and "scrape failed: " in refusal_lines(caplog)[0]


def test_on_a_unix_socket_only_the_group_may_scrape(monkeypatch, runtime: Path):
    monkeypatch.setattr(metrics, "snapshot", lambda daemon: SNAPSHOT)
    served = Endpoint(MetricsConfig(None, None, runtime / "metrics.sock"))
    try:
        mode = (runtime / "metrics.sock").stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        assert b"gatewayd_samples_total 40.0" in served.ask()
    finally:
        served.close()
    assert not (runtime / "metrics.sock").exists()
