"""What a local peer can hold: request size and nesting, connections in total and per kernel account, the
idle timeout, the descriptor reserve, and refusals logged once per peer and period.

Accounts are real: forked children drop to throwaway uids (the suite runs as root) and connect to a
ControlServer on a loop thread of this process, so SO_PEERCRED reports the uid the cap counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
from test_control import Served
from test_systemd import UNIT, unit_settings

from gatewayd.config.model import ACCEPT_BURST, LimitsConfig
from gatewayd.operator.control import ControlServer, call, socket_path, stream
from gatewayd.peerlimits import DescriptorReserve, RefusalLog, Slots, nesting_depth

ACCOUNT_A, ACCOUNT_B = 64_001, 64_002  # uids without a name: nothing else on the box uses them
LIMITS = LimitsConfig(control_connections=5, control_connections_per_account=3, control_idle_timeout=1.0,
                      control_request_bytes=4096, control_request_depth=8, refusal_log_interval=60.0)


def limited(runtime: Path, limits: LimitsConfig = LIMITS, reserve: DescriptorReserve | None = None) -> Served:
    served = Served(socket_path(runtime))
    served.server = ControlServer(served.path, limits, reserve)
    served.server.handlers["ping"] = lambda request, peer: "pong"
    served.run(served.server.start())
    served.path.parent.chmod(0o755)  # any account may connect: the caps, not the file modes, are under test
    served.path.chmod(0o666)
    return served


def refusal_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "gatewayd.limits"]


# ------------------------------------------------------------------------------------------ nesting

@pytest.mark.parametrize("document, depth", [
    (b'{"cmd": "ping"}', 1), (b"42", 0), (b"[]", 1), (b'{"a": [[{"b": []}]]}', 5),
    (b'{"text": "[[[[{{{{"}', 1), (b'{"text": "a \\" [[[[ \\\\", "b": [1]}', 2),
    (b"[" * 500_000, 500_000),
])
def test_nesting_depth_counts_brackets_outside_strings(document: bytes, depth: int):
    assert nesting_depth(document) == depth


# ------------------------------------------------------------------------------------------ size and nesting

def exchange(path: Path, lines: list[bytes]) -> list[dict | None]:
    """Send each line and read its answer; None once the server has closed the connection."""
    answers: list[dict | None] = []
    with socket.socket(socket.AF_UNIX) as sock, sock.makefile("rb") as replies:
        sock.connect(str(path))
        for line in lines:
            try:
                sock.sendall(line)
                answer = replies.readline()
            except OSError:  # reset or broken pipe: closed by the server
                answer = b""
            answers.append(json.loads(answer) if answer else None)
    return answers


def test_a_request_at_the_size_limit_is_served_one_byte_more_refused(runtime: Path, caplog):
    caplog.set_level(logging.INFO)
    served = limited(runtime)
    try:
        at_limit = b'{"cmd": "ping", "pad": "' + b"x" * (4096 - 26) + b'"}'
        assert len(at_limit) == 4096
        over = at_limit[:-2] + b'x"}'
        assert exchange(served.path, [at_limit + b"\n", at_limit + b"\n"]) == [{"ok": True, "result": "pong"}] * 2
        answers = exchange(served.path, [over + b"\n", b'{"cmd": "ping"}\n'])
        assert answers == [{"ok": False, "error": "request longer than 4096 bytes"}, None], \
            "refused and closed: the rest of an over-long line cannot be told from the next request"
    finally:
        served.close()
    assert refusal_lines(caplog) == ["control socket: refused account root (uid 0): request longer than 4096 bytes "
                                     "(limits.control_request_bytes); next report in 60 s at most"]


def test_nesting_beyond_the_limit_is_refused_without_a_traceback_once_per_period(runtime: Path, caplog):
    caplog.set_level(logging.INFO)
    served = limited(runtime)
    deep = b'{"cmd": "ping", "x": ' + b"[" * 8 + b"]" * 8 + b"}\n"  # depth 9
    just = b'{"cmd": "ping", "x": ' + b"[" * 7 + b"]" * 7 + b"}\n"  # depth 8
    brackets = b"[" * 4000 + b"\n"  # within the size, far beyond the depth (the parser would recurse)
    try:
        answers = exchange(served.path, [just, deep, brackets, brackets, just])
        assert answers[0] == answers[4] == {"ok": True, "result": "pong"}, "the connection stays usable"
        assert answers[1] == answers[2] == answers[3] == {"ok": False, "error": "request nested deeper than 8 levels"}
        for _ in range(20):
            exchange(served.path, [b"[" * 500_000 + b"\n"])
    finally:
        served.close()
    lines = refusal_lines(caplog)
    assert len(lines) == 1, lines  # 23 refusals, one line: once per peer and period, whatever the reason
    assert "nested deeper than 8 levels" in lines[0]
    assert not [record for record in caplog.records if record.exc_info], "no traceback"


# ------------------------------------------------------------------------------------------ per-account caps

def close_inherited(keep: set[int]) -> None:
    """In a forked child: close the copies of the server's descriptors (its connections would otherwise
    stay open in the child after the server closed them)."""
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


class Holder:
    """A forked child, running as `uid`, that opens `count` connections, pings on each, reports the
    outcomes, then reports which the server closed once `release` is written to it."""

    def __init__(self, path: Path, uid: int, count: int):
        self.results, child_results = os.pipe()
        child_orders, self.orders = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                close_inherited(keep={child_results, child_orders})
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                self._child(path, count, child_results, child_orders)
            finally:
                os._exit(0)
        os.close(child_results)
        os.close(child_orders)
        self.reader = os.fdopen(self.results, "rb")

    @staticmethod
    def _child(path: Path, count: int, results: int, orders: int) -> None:
        connections, outcomes = [], []
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(str(path))
            try:
                sock.sendall(b'{"cmd": "ping"}\n')
                answer = sock.recv(4096)
            except OSError:
                answer = b""
            outcomes.append(json.loads(answer)["result"] if answer else "closed")
            connections.append(sock)
        os.write(results, (json.dumps(outcomes) + "\n").encode())
        os.read(orders, 1)  # hold until told
        closed = []
        for sock in connections:
            sock.settimeout(0.05)
            try:
                closed.append(sock.recv(1) == b"")
            except (TimeoutError, OSError):
                closed.append(False)
        os.write(results, (json.dumps(closed) + "\n").encode())

    def outcomes(self) -> list:
        return json.loads(self.reader.readline())

    def release(self) -> list[bool]:
        """Which of its connections the server has closed by now."""
        os.write(self.orders, b"x")
        closed = json.loads(self.reader.readline())
        os.waitpid(self.pid, 0)
        self.reader.close()
        os.close(self.orders)
        return closed


def test_connections_are_capped_per_account_and_in_total_until_the_idle_timeout(runtime: Path, caplog):
    caplog.set_level(logging.INFO)
    served = limited(runtime)
    try:
        a = Holder(served.path, ACCOUNT_A, 4)  # the cap (3), then cap + 1
        assert a.outcomes() == ["pong", "pong", "pong", "closed"]
        b = Holder(served.path, ACCOUNT_B, 3)  # 2 more reach the total (5), the third is over it
        assert b.outcomes() == ["pong", "pong", "closed"]
        assert exchange(served.path, [b'{"cmd": "ping"}\n']) == [None], "root, too, finds all places taken"
        time.sleep(LIMITS.control_idle_timeout + 0.5)
        assert a.release() == [True, True, True, True] and b.release() == [True, True, True], \
            "idle connections are closed after control_idle_timeout"
        again = Holder(served.path, ACCOUNT_A, 3)
        assert again.outcomes() == ["pong", "pong", "pong"], "the places are free again"
        again.release()
    finally:
        served.close()
    lines = refusal_lines(caplog)
    assert len(lines) == 3, lines
    assert "account root (uid 0): all 5 connections are taken" in lines[2]
    assert "account 64001 (uid 64001): the account holds its 3 connections already" in lines[0]
    assert "account 64002 (uid 64002): all 5 connections are taken" in lines[1]


def test_a_stream_is_not_idle_while_its_reader_keeps_up(runtime: Path):
    async def slow(request, peer):
        for n in range(4):
            await asyncio.sleep(0.5)  # 2 s in all, twice the idle timeout
            yield n

    served = limited(runtime)
    served.server.handlers["slow"] = slow
    try:
        assert list(stream(served.path, {"cmd": "slow"}, timeout=10)) == [0, 1, 2, 3]
    finally:
        served.close()


def test_a_stream_whose_reader_stopped_reading_is_closed_after_the_idle_timeout(runtime: Path):
    async def flood(request, peer):
        while True:
            yield "x" * 65536

    async def places() -> int:
        for _ in range(100):
            if served.server.slots.count == 0:
                break
            await asyncio.sleep(0.05)
        return served.server.slots.count

    served = limited(runtime)
    served.server.handlers["flood"] = flood
    try:
        with socket.socket(socket.AF_UNIX) as reader:
            reader.connect(str(served.path))
            reader.sendall(b'{"cmd": "flood"}\n')  # and never reads: the daemon's buffers fill, then it waits
            time.sleep(LIMITS.control_idle_timeout)
            assert served.run(places()) == 0, "the connection was closed and its place given back"
    finally:
        served.close()


def test_the_last_descriptors_are_kept_from_peers(runtime: Path, caplog):
    caplog.set_level(logging.INFO)
    descriptors = [100]
    reserve = DescriptorReserve(limit=200, reserved=50, count=lambda: descriptors[0])
    served = limited(runtime, reserve=reserve)
    try:
        assert call(served.path, {"cmd": "ping"}, timeout=5) == "pong"
        descriptors[0] = 150  # the devices have taken all but the reserve
        assert exchange(served.path, [b'{"cmd": "ping"}\n']) == [None]
        descriptors[0] = 149
        assert call(served.path, {"cmd": "ping"}, timeout=5) == "pong"
    finally:
        served.close()
    assert refusal_lines(caplog) == ["control socket: refused account root (uid 0): the last 50 of 200 descriptors "
                                     "are kept for the devices, the store and the uplink; next report in 60 s at most"]


# ------------------------------------------------------------------------------------------ the parts

def test_slots_boundaries():
    slots = Slots(total=3, per_account=2, reserve=None)
    assert slots.admit("a") is None and slots.admit("a") is None
    assert slots.admit("a") == "the account holds its 2 connections already"
    assert slots.admit("b") is None
    assert slots.admit("c") == "all 3 connections are taken"
    slots.release("a")
    assert slots.admit("c") is None and slots.held == {"a": 1, "b": 1, "c": 1}
    for account in ("a", "b", "c"):
        slots.release(account)
    assert slots.count == 0 and slots.held == {}


def test_refusals_are_logged_once_per_peer_and_period(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    refusals = RefusalLog("control socket", 60.0, clock=lambda: now[0])
    for step in range(100):  # one a second for 100 s from one peer
        now[0] = float(step)
        refusals.refused("account a", "full")
    refusals.refused("account b", "full")
    assert refusal_lines(caplog) == [
        "control socket: refused account a: full; next report in 60 s at most",
        "control socket: refused account a: full (59 more refused in the 60 s before); next report in 60 s at most",
        "control socket: refused account b: full; next report in 60 s at most",
    ]


def test_a_limit_too_low_for_the_caps_is_said_at_start(caplog):
    caplog.set_level(logging.INFO)
    DescriptorReserve(limit=1024, reserved=256, count=lambda: 728).warn_if_short(40)  # room for 40 exactly
    assert refusal_lines(caplog) == []
    DescriptorReserve(limit=1024, reserved=256, count=lambda: 729).warn_if_short(40)
    assert refusal_lines(caplog) == ["descriptor limit 1024 leaves room for 39 peer connections beyond the 256 "
                                     "reserved, fewer than the 40 the limits allow: raise LimitNOFILE"]


def test_the_unit_gives_the_descriptors_the_defaults_count_on_and_no_core_dumps():
    settings = unit_settings(UNIT.read_text())
    assert settings["LimitCORE"] == ["0"], "a core would hold the signing key"
    defaults = LimitsConfig()
    peers = defaults.control_connections + defaults.metrics_connections + 2 * ACCEPT_BURST
    assert int(settings["LimitNOFILE"][0]) >= defaults.reserved_descriptors + peers + 1000
    assert int(settings["TasksMax"][0]) >= 64
