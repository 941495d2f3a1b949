"""The console without a browser: its configuration (remote binding refused without TLS and a login), its
login (wrong passwords refused, then throttled; session cookies), its HTTP server's limits, the snapshot it
takes over a real control socket, and the trend reduction. The browser drives it in hil_tests/test_console_page.py."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_control import ROOT, serving

from gatewayd.config import ConfigError, load_config
from gatewayd.config.jsonschema import config_schema
from gatewayd.config.model import ConsoleConfig
from gatewayd.console import auth
from gatewayd.console.app import ConsoleApp
from gatewayd.console.http import ConsoleServer
from gatewayd.console.source import DaemonLink, Poller
from gatewayd.console.trend import MAX_POINTS, TrendError, parse_query, reduce, stretches
from gatewayd.operator.control import socket_path
from gatewayd.secretfiles import SecretFileError

PASSWORD = "correct horse battery"

BASE = """\
gateway:
  id: GW-CON-01
  state_dir: state
  runtime_dir: run
devices:
  - name: plc
    driver: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: LT101, address: 0, type: float32}
uplink:
  host: 127.0.0.1
  transport: plain
  signing_key: signing.key
"""


def write_config(tmp_path: Path, console: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + console, encoding="utf-8")
    return path


def private(path: Path, text: str = "x\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------------------ configuration

def test_the_console_listens_on_loopback_without_a_section(tmp_path: Path):
    console = load_config(write_config(tmp_path, "")).console
    assert (console.host, console.port, console.tls, console.users_file) == ("127.0.0.1", 8780, False, None)
    assert console.url() == "http://127.0.0.1:8780/"


@pytest.mark.parametrize("given, missing", [
    ("", "cert_file, key_file, users_file"),
    ("  users_file: users\n", "cert_file, key_file"),
    ("  cert_file: cert.pem\n  key_file: key.pem\n", "users_file"),
])
def test_another_address_without_tls_and_a_login_is_refused_at_check_config(tmp_path: Path, given: str, missing: str):
    private(tmp_path / "users")
    private(tmp_path / "key.pem")
    path = write_config(tmp_path, "console:\n  listen: 0.0.0.0:8443\n" + given)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [issue] = caught.value.issues
    assert issue.path == "console.listen" and issue.line == 16
    assert "0.0.0.0 is not a loopback address" in issue.message and f"set {missing} " in issue.message
    checked = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", str(path)], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
    assert checked.returncode == 1 and "console.listen" in checked.stderr


def test_another_address_with_tls_and_a_login_is_accepted_and_loose_secrets_are_not(tmp_path: Path):
    private(tmp_path / "users")
    key = private(tmp_path / "key.pem")
    (tmp_path / "cert.pem").write_text("cert")
    path = write_config(tmp_path, "console:\n  listen: '[::]:8443'\n  cert_file: cert.pem\n  key_file: key.pem\n"
                                  "  users_file: users\n")
    console = load_config(path).console
    assert (console.host, console.port, console.tls, console.users_file) == ("::", 8443, True, tmp_path / "users")
    assert console.url() == "https://[::]:8443/"
    key.chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [issue.path for issue in caught.value.issues] == ["console.key_file"]
    assert "chmod 600" in caught.value.issues[0].message


def test_console_keys_are_in_the_json_schema_and_bounded(tmp_path: Path):
    section = config_schema()["properties"]["console"]
    assert {"listen", "cert_file", "key_file", "users_file", "connections", "login_failures"} <= \
        set(section["anyOf"][0]["properties"] if "anyOf" in section else section["properties"])
    path = write_config(tmp_path, "console:\n  connections: 4\n  connections_per_address: 5\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [issue.path for issue in caught.value.issues] == ["console.connections_per_address"]


# ------------------------------------------------------------------------------------------ users file

def test_console_user_writes_scrypt_hashes_mode_0600_and_nothing_readable(tmp_path: Path):
    users = tmp_path / "users"
    for password in (PASSWORD, PASSWORD + "!"):  # the second run changes the password
        made = subprocess.run([sys.executable, "-m", "gatewayd", "console-user", "--file", str(users), "alice",
                               "--password-stdin"], input=password + "\n", capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        assert made.returncode == 0, made.stderr
    assert (users.stat().st_mode & 0o777) == 0o600
    text = users.read_text()
    assert PASSWORD not in text and text.startswith("alice:scrypt:32768:8:1:") and text.count("\n") == 1
    stored = auth.read_users(users)["alice"]
    assert auth.password_matches(stored, PASSWORD + "!") and not auth.password_matches(stored, PASSWORD)
    short = subprocess.run([sys.executable, "-m", "gatewayd", "console-user", "--file", str(users), "bob",
                            "--password-stdin"], input="short\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 1 and "at least 12" in short.stderr and "bob" not in users.read_text()


def test_a_malformed_users_file_names_its_line(tmp_path: Path):
    path = private(tmp_path / "users", "# users\nalice:plain-text-password\n")
    with pytest.raises(auth.UsersFileError, match=r"users:2: not NAME:scrypt"):
        auth.read_users(path)


def test_the_throttle_refuses_an_address_and_a_user_after_the_failures_until_the_lockout_ends():
    now = [0.0]
    throttle = auth.LoginThrottle(3, 300.0, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("10.0.0.9", "alice")
    assert throttle.wait("10.0.0.9", "alice") == 0
    throttle.failed("10.0.0.9", "alice")
    assert throttle.wait("10.0.0.9", "bob") == 300.0, "the address is locked out, whatever user it tries"
    assert throttle.wait("10.0.0.8", "alice") == 300.0, "the user is locked out, from any address"
    assert throttle.wait("10.0.0.8", "bob") == 0
    now[0] = 299.9
    assert throttle.wait("10.0.0.9", "alice") == pytest.approx(0.1)
    now[0] = 300.0
    assert throttle.wait("10.0.0.9", "alice") == 0


# ------------------------------------------------------------------------------------------ the server

class FakePoller:
    """A poller whose snapshot is set by the test."""

    def __init__(self) -> None:
        self.snapshot = type("Snapshot", (), {"version": 1, "json": b'{"points": []}'})()

    async def changed(self, version, timeout):
        await asyncio.sleep(min(timeout, 0.05))
        return self.snapshot


class Running:
    """A ConsoleServer on a loop in a thread, on a free loopback port."""

    def __init__(self, config: ConsoleConfig, users: dict[str, str] | None, tls: ssl.SSLContext | None = None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = self.run(self._app(config, users))
        self.server = ConsoleServer(config, self.app, tls)
        self.run(self.server.start())
        self.port = self.server.port

    async def _app(self, config, users):
        return ConsoleApp(config, FakePoller(), None, users)

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def login(self, user: str, password: str, address_headers: dict | None = None):
        body = f"user={user}&password={password.replace(' ', '+')}"
        return self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                     **(address_headers or {})})


@contextlib.contextmanager
def console(config: ConsoleConfig, users: dict[str, str] | None = None) -> Iterator[Running]:
    running = Running(config, users)
    try:
        yield running
    finally:
        running.close()


def settings(**changes) -> ConsoleConfig:
    return ConsoleConfig(**{"port": 0, **changes})


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    return {"alice": auth.hash_password(PASSWORD)}


def test_without_a_users_file_the_page_and_its_api_are_served_with_a_strict_policy():
    with console(settings()) as running:
        status, headers, body = running.request("GET", "/")
        assert status == 200 and b'<script src="/static/console.js"' in body
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
        assert running.request("GET", "/api/snapshot")[2] == b'{"points": []}'
        assert running.request("GET", "/static/console.js")[0] == 200
        assert running.request("GET", "/static/../app.py")[0] == 404
        assert running.request("POST", "/api/snapshot", "")[0] == 405, "read-only: nothing is posted but a login"
        assert running.request("GET", "/login")[0] == 404, "no users file: no login page"


def test_a_wrong_password_is_refused_then_every_login_is_throttled_and_a_right_one_gets_a_strict_cookie(users):
    with console(settings(login_failures=3), users) as running:
        status, headers, _ = running.request("GET", "/")
        assert (status, headers["Location"]) == (303, "/login")
        assert running.request("GET", "/api/snapshot")[0] == 401
        started = time.monotonic()
        for attempt in range(3):
            status, _, body = running.login("alice", "wrong password " + str(attempt))
            assert status == 401 and b"Wrong user or password" in body
        assert time.monotonic() - started >= 3 * 0.9, "every refusal is answered after a delay"
        status, _, body = running.login("alice", PASSWORD)
        assert status == 429 and b"Too many wrong passwords" in body, "the right password is not even looked at"
        status, _, _ = running.login("mallory", PASSWORD)
        assert status == 429, "the address is locked out for every user"

    with console(settings(), users) as running:
        status, headers, _ = running.login("alice", PASSWORD)
        assert (status, headers["Location"]) == (303, "/")
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"{auth.COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Secure" not in cookie, "plain HTTP on loopback: a Secure cookie would never come back"
        token = cookie.split(";")[0]
        assert running.request("GET", "/api/snapshot", headers={"Cookie": token})[0] == 200
        assert running.request("GET", "/api/snapshot", headers={"Cookie": token[:-2] + "xx"})[0] == 401
        status, headers, _ = running.request("POST", "/logout", "", {"Cookie": token})
        assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]
        assert running.request("GET", "/api/snapshot", headers={"Cookie": token})[0] == 401, "the session ended"


def test_over_tls_the_page_is_served_to_a_verifying_client_and_the_cookie_is_secure(tmp_path: Path, users):
    from test_opcua_mapping import certificate

    from cryptography.hazmat.primitives import serialization
    from gatewayd.console.service import tls_context

    cert, key = certificate("127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private(tmp_path / "key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode())
    config = settings(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    running = Running(config, users, tls_context(config))
    try:
        client = ssl.create_default_context(cafile=tmp_path / "cert.pem")
        client.check_hostname = False  # a test certificate names no host; the chain is still verified
        connection = http.client.HTTPSConnection("127.0.0.1", running.port, context=client, timeout=30)
        connection.request("POST", "/login", f"user=alice&password={PASSWORD.replace(' ', '+')}",
                           {"Content-Type": "application/x-www-form-urlencoded"})
        answer = connection.getresponse()
        answer.read()
        connection.close()
        assert answer.status == 303 and "; Secure" in answer.getheader("Set-Cookie")
        assert raw_exchange(running.port, b"GET / HTTP/1.1\r\n\r\n")[:5] != b"HTTP/", "no plain HTTP on a TLS port"
    finally:
        running.close()
    (tmp_path / "key.pem").chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        tls_context(config)


def test_an_unknown_user_costs_the_same_hash_as_a_known_one_and_no_typed_name_is_logged(users, monkeypatch, caplog):
    hashed = []
    real = auth.password_matches
    monkeypatch.setattr(auth, "password_matches",
                        lambda stored, password: hashed.append(stored) or real(stored, password))
    with console(settings(), users) as running:
        assert running.login("hunter2hunter2", PASSWORD)[0] == 401, "a password typed into the user field"
        assert running.login("alice", "not her password")[0] == 401
    assert len(hashed) == 2 and all(stored.startswith("scrypt:") for stored in hashed)
    logged = caplog.text
    assert "wrong password for an unknown user from 127.0.0.1" in logged and "hunter2" not in logged
    assert "wrong password for user alice from 127.0.0.1" in logged and PASSWORD not in logged


def raw_exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_the_server_refuses_long_heads_long_bodies_bodyless_posts_and_slow_clients():
    with console(settings(request_bytes=1024, header_timeout=0.5), {}) as running:
        long_head = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
        assert raw_exchange(running.port, long_head).startswith(b"HTTP/1.1 431 ")
        body = b"user=a&password=" + b"b" * 2000
        big = b"POST /login HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        assert raw_exchange(running.port, big).startswith(b"HTTP/1.1 413 ")
        assert raw_exchange(running.port, b"POST /login HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw_exchange(running.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
            started = time.monotonic()
            answer = slow.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 10


def test_connections_beyond_the_per_address_cap_are_closed_before_anything_is_read():
    with console(settings(connections=10, connections_per_address=2, header_timeout=30)) as running:
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=30) for _ in range(2)]
        try:
            deadline = time.monotonic() + 30
            while running.server.slots.count < 2:
                assert time.monotonic() < deadline, "the two connections were never admitted"
                time.sleep(0.01)
            try:
                answer = raw_exchange(running.port, b"GET / HTTP/1.1\r\n\r\n")
            except ConnectionResetError:  # aborted: the kernel answers the request with a reset
                answer = b""
            assert answer == b"", "closed without an answer"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 30
        while running.server.slots.count:
            assert time.monotonic() < deadline, "the places were never given back"
            time.sleep(0.01)
        assert running.request("GET", "/")[0] == 200


def test_the_event_stream_sends_each_snapshot_as_an_event():
    with console(settings()) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
            sock.sendall(b"GET /api/stream HTTP/1.1\r\n\r\n")
            received = b""
            while b"\n\n" not in received.partition(b"\r\n\r\n")[2]:
                received += sock.recv(65536)
        head, _, events = received.partition(b"\r\n\r\n")
        assert b"Content-Type: text/event-stream" in head and events.startswith(b'data: {"points": []}\n\n')


# ------------------------------------------------------------------------------------------ the snapshot

def test_the_poller_asks_view_commands_only_and_sends_nan_as_null(tmp_path: Path):
    from gatewayd.operator.access import COMMAND_ROLES, VIEW

    asked = []

    def answer(name, result):
        def handle(request, peer):
            asked.append(request["cmd"])
            return result
        return handle

    handlers = {name: answer(name, []) for name in ("alarms", "interlocks", "bypass_list")}
    handlers["status"] = answer("status", {"devices": [{"name": "plc", "last_poll_latency": math.nan}]})
    handlers["points"] = answer("points", [{"tag": "LT101", "value": 4.5}])
    handlers["alarm_actions"] = answer("alarm_actions", {})
    with serving(tmp_path / "run", handlers) as served:
        async def refresh():
            poller = Poller(DaemonLink(served.path), 1.0)
            await poller.refresh()
            return poller.snapshot

        snapshot = asyncio.run(refresh())
    assert all(COMMAND_ROLES[command] == VIEW for command in asked) and len(set(asked)) == 6
    data = json.loads(snapshot.json)
    assert data["error"] is None and data["points"] == [{"tag": "LT101", "value": 4.5}]
    assert data["status"]["devices"][0]["last_poll_latency"] is None


def test_an_unreachable_daemon_is_named_in_the_snapshot(tmp_path: Path):
    async def refresh():
        poller = Poller(DaemonLink(socket_path(tmp_path)), 1.0)
        await poller.refresh()
        return poller.snapshot

    snapshot = asyncio.run(refresh())
    assert "cannot reach gatewayd" in json.loads(snapshot.json)["error"] and snapshot.version == 1


# ------------------------------------------------------------------------------------------ trends

def test_reduction_keeps_each_buckets_extremes_so_a_one_sample_spike_survives():
    ts = np.arange(100_000, dtype=np.float64)
    value = np.zeros(ts.size)
    value[54_321] = 48.0
    value[70_000:70_010] = np.nan  # bad samples
    reduced = reduce(ts, value, np.zeros(ts.size, np.uint8), 0.0, 100_000.0)
    assert len(reduced["ts"]) == MAX_POINTS
    assert max(high for high in reduced["high"] if high is not None) == 48.0
    assert min(low for low in reduced["low"] if low is not None) == 0.0
    small = reduce(ts[:10], value[:10], np.zeros(10, np.uint8), 0.0, 10.0)
    assert small["ts"] == list(range(10)) and small["low"] == small["high"]


def test_quality_stretches_run_to_the_next_sample_of_another_kind():
    ts = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    quality = np.array([0, 2, 2, 17, 0, 17], np.uint8)
    assert stretches(ts, quality, 10.0) == [{"from": 1.0, "to": 3.0, "kind": "uncertain"},
                                            {"from": 3.0, "to": 4.0, "kind": "bad"},
                                            {"from": 5.0, "to": 10.0, "kind": "bad"}]
    assert stretches(ts[:0], quality[:0], 10.0) == []


@pytest.mark.parametrize("query, error", [
    ({}, "give 1 to 8 tags"),
    ({"tag": [f"T{i}" for i in range(9)]}, "give 1 to 8 tags"),
    ({"tag": ["A"], "from": ["x"]}, "Unix times"),
    ({"tag": ["A"], "from": ["100"], "to": ["100"]}, "from must be before to"),
    ({"tag": ["A"], "from": ["0"], "to": [str(32 * 86400)]}, "at most 31 days"),
])
def test_bad_trend_queries_are_refused_with_a_reason(query, error):
    with pytest.raises(TrendError, match=error):
        parse_query(query, 1_000_000.0)


def test_trends_read_history_and_outbox_and_mark_the_bad_stretch(tmp_path: Path):
    from store import SampleBlock, Store

    from gatewayd.console.trend import Trends

    store = Store.open(tmp_path / "gatewayd.db")
    start = time.time() - 3000.0
    try:
        [tag] = store.tag_ids(["GT101"]).tolist()
        ts = start + np.arange(2000, dtype=np.float64)  # one sample a second
        value = np.where((ts > start + 500) & (ts < start + 510), 48.0, 0.5)
        quality = np.where((ts >= start + 1000) & (ts < start + 1100), 17, 0)
        value[quality == 17] = np.nan
        store.append(SampleBlock(np.full(ts.size, tag), ts, value, quality, np.full(ts.size, np.nan)), [])
        while (batch := store.build_batch(500, lambda content, seq, prev: b"batch")) is not None:
            store.acknowledge(batch.seq)  # into the history's day tables
        later = start + 2000 + np.arange(5, dtype=np.float64)
        store.append(SampleBlock(np.full(5, tag), later, np.full(5, 1.5), np.zeros(5), np.full(5, np.nan)), [])
    finally:
        store.close()

    async def query():
        trends = Trends(tmp_path / "gatewayd.db")
        try:
            answer = await trends.query(["GT101"], start, start + 2005.0)
            with pytest.raises(TrendError, match="GT999"):
                await trends.query(["GT999"], start, start + 10.0)
            return answer
        finally:
            trends.close()

    series = asyncio.run(query())["series"]["GT101"]
    assert series["samples"] == 2005, "the acknowledged rows and the 5 still in the outbox"
    assert max(high for high in series["high"] if high is not None) == 48.0
    assert series["high"][-1] == 1.5
    assert series["stretches"] == [{"from": start + 1000, "to": start + 1100, "kind": "bad"}]


def test_a_trend_defaults_to_the_last_ten_minutes():
    assert parse_query({"tag": ["A"]}, 1000.0) == (["A"], 400.0, 1000.0)


