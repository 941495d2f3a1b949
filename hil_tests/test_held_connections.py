"""Issue 12, findings 1 and 5: a local account holding a thousand idle connections and half-sent requests on
both the metrics endpoint and the control socket must not keep a restarted PLC down, nor flood the log.

The real daemon runs as a process with the project's PLC simulator and the metrics endpoint on; a forked
child drops to the `nobody` account (in the socket's group, as the review's group member) and runs
hil_tests/sim/hoarder.py against both endpoints, re-opening whatever the daemon closes. Meanwhile the
operator (root) still gets `status`, sends 500,000-bracket requests, and the PLC is stopped and started
again: the daemon must reconnect while the attack goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gatewayd.config.model import ACCEPT_BURST, LimitsConfig
from gatewayd.operator.control import CommandError, ControlError, call
from hil_tests.harness import Daemon, Simulator, free_port, plant_config, stop_all
from hil_tests.sim import hoarder
from hil_tests.test_service import wait_for_scrape

HELD = 1000
NOFILE = 1024  # the daemon's descriptor limit in the review (a soft limit of 1024)
BACKOFF_MAX = 2.0
LIMITS = LimitsConfig()  # the defaults, as a site would run them
PEER_SLOTS = LIMITS.control_connections_per_account + LIMITS.metrics_connections


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def status(path: Path) -> dict:
    return call(path, {"cmd": "status"}, timeout=10)


def wait_until(what: str, check, timeout: float, daemon: Daemon):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ControlError, OSError):
            result = check()
            if result:
                return result
        assert daemon.running, daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} within {timeout} s\n{daemon.log_text()[-3000:]}"
        time.sleep(0.1)


@contextlib.contextmanager
def hoarding(account: str, socket_path: Path, port: int, workdir: Path) -> Iterator[Path]:
    """hoarder.py in a forked child running as `account` with the root group (the socket's group) as a
    supplementary group; yields the path of its report."""
    entry = pwd.getpwnam(account)
    workdir.mkdir()
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    report = workdir / "report.json"
    pid = os.fork()
    if pid == 0:
        try:
            for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
                if fd > 2:  # the test's own descriptors are none of the hoarder's business
                    with contextlib.suppress(OSError):
                        os.close(fd)
            os.setgroups([0])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            hoarder.main(["--socket", str(socket_path), "--port", str(port), "--count", str(HELD),
                          "--report", str(report)])
        finally:
            os._exit(0)
    try:
        yield report
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


@dataclass
class Outcome:
    """What one attack showed: the daemon's descriptors before and while hoarded, the time the restarted
    PLC took to be reconnected, the hoarder's counts, the daemon's log and a scrape once it was over."""

    before: int
    samples: list[int]
    reconnected: float
    held: dict
    log: str
    scraped: dict[str, float]

    @property
    def refusals(self) -> list[str]:
        return [line for line in self.log.splitlines() if ": refused " in line]

    def show(self) -> None:
        print(f"descriptors {self.before} before, {min(self.samples)}..{max(self.samples)} under attack; PLC "
              f"reconnected {self.reconnected:.1f} s after its restart; hoarder {self.held}; "
              f"{len(self.refusals)} refusal lines:\n" + "\n".join(self.refusals))


def attack(tmp_path: Path, limits: dict, operator_served: bool) -> Outcome:
    """Run the daemon under a descriptor limit of NOFILE (the default soft limit the review's daemon had),
    hoard both endpoints, restart the PLC meanwhile. `operator_served`: whether root's requests get
    through during the attack (and are refused for their size and nesting)."""
    top = Path(tempfile.mkdtemp(prefix="gatewayd-held-"))
    top.chmod(0o755)  # others may traverse to the socket (tmp_path is 0700); the socket's own mode decides
    plc = Simulator(tmp_path, 20).start()
    config = plant_config(tmp_path, plc_port=plc.port, broker_port=free_port(), tags=20, poll_interval=0.5)
    document = yaml.safe_load(config.read_text())
    document["gateway"]["runtime_dir"] = str(top / "run")
    document["devices"][0].update(backoff_initial=0.5, backoff_max=BACKOFF_MAX)
    metrics_port = free_port()
    document["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    document["limits"] = limits
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    control = top / "run" / "control.sock"
    daemon = Daemon(tmp_path, config)
    daemon.argv = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", *daemon.argv]
    daemon.start()
    try:
        wait_until("the device up with 20 good tags", lambda: status(control)["tags"]["good"] == 20, 120, daemon)
        wait_for_scrape(metrics_port, daemon)
        before = descriptors(daemon.proc.pid)

        with hoarding("nobody", control, metrics_port, top / "hoarder") as report:
            wait_until("the hoarder's first thousand tries on each endpoint", lambda: report.exists() and all(
                kind["opened"] >= HELD for kind in json.loads(report.read_text()).values()), 60, daemon)
            if operator_served:
                operator_bombs(control)
            samples = []
            for _ in range(40):
                samples.append(descriptors(daemon.proc.pid))
                time.sleep(0.05)
            if operator_served:
                assert status(control)["tags"]["good"] == 20, "the operator is served while another account hoards"

            label = f"device tank-plc (127.0.0.1:{plc.port})"
            plc.stop()
            wait_until("the device down", lambda: f"{label} down: " in daemon.log_text(), 30, daemon)
            restarted = time.monotonic()
            plc = Simulator(tmp_path, 20, port=plc.port).start()
            wait_until("the device back", lambda: f"{label} back after" in daemon.log_text(), 30, daemon)
            reconnected = time.monotonic() - restarted
            held = json.loads(report.read_text())
        wait_until("good values again", lambda: status(control)["tags"]["good"] == 20, 30, daemon)
        scraped = wait_for_scrape(metrics_port, daemon)
        assert daemon.stop() == 0
    finally:
        stop_all(daemon, plc)
        for path in sorted(top.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        top.rmdir()
    outcome = Outcome(before, samples, reconnected, held, daemon.log_text(), scraped)
    outcome.show()
    assert held["control"]["opened"] >= HELD and held["metrics"]["opened"] >= HELD
    assert scraped['gatewayd_device_up{device="tank-plc"}'] == 1, "the endpoint answers once the hoarder is gone"
    assert "Traceback" not in outcome.log
    return outcome


def operator_bombs(control: Path) -> None:
    """root's own bombs: refused before any parser sees them, no traceback."""
    for _ in range(10):
        with pytest.raises(CommandError, match="nested deeper than 32 levels"):
            call(control, {"cmd": "status", "x": nested(40)})
        with socket.socket(socket.AF_UNIX) as bomb:
            bomb.connect(str(control))
            with contextlib.suppress(BrokenPipeError):  # the daemon stops reading at the limit
                bomb.sendall(b"[" * 500_000 + b"\n")
            assert json.loads(bomb.makefile("rb").readline())["error"] == "request longer than 65536 bytes"


def test_a_thousand_held_connections_do_not_keep_a_restarted_plc_down(tmp_path: Path):
    outcome = attack(tmp_path, {}, operator_served=True)
    held, samples, refusals = outcome.held, outcome.samples, outcome.refusals
    assert held["control"]["closed_by_daemon"] >= HELD - LIMITS.control_connections_per_account
    assert held["metrics"]["closed_by_daemon"] >= HELD - LIMITS.metrics_connections
    assert min(samples) <= outcome.before + PEER_SLOTS + 4, "between bursts, peers hold their caps' worth, no more"
    assert max(samples) <= outcome.before + PEER_SLOTS + 2 * ACCEPT_BURST + 4, "a burst of accepts stays in reserve"
    # one line per peer and 60 s: the hoarder on each endpoint, the operator's 20 refused requests
    assert any("control socket: refused account nobody" in line for line in refusals)
    assert any("metrics endpoint: refused address 127.0.0.1" in line for line in refusals)
    assert any("control socket: refused account root (uid 0): request nested deeper" in line for line in refusals)
    assert len(refusals) <= 3 * 2, refusals  # at most a second line each if the test outlasted a period


def test_with_caps_too_high_for_the_limit_the_reserve_keeps_descriptors_for_the_plc(tmp_path: Path):
    """Caps above what NOFILE can give (as a careless site might set them): the hoarder takes every place
    peers may have, and the last reserved_descriptors still go to the PLC's reconnection."""
    caps = {"control_connections": 5000, "control_connections_per_account": 5000, "metrics_connections": 5000}
    outcome = attack(tmp_path, caps, operator_served=False)
    samples, refusals = outcome.samples, outcome.refusals
    ceiling = NOFILE - LIMITS.reserved_descriptors
    assert max(samples) >= ceiling - 8, "the hoarder did fill every place the reserve leaves"
    assert max(samples) <= ceiling + 2 * ACCEPT_BURST, "peers never went deeper than one burst into the reserve"
    assert any(f"the last {LIMITS.reserved_descriptors} of {NOFILE} descriptors are kept" in line
               for line in refusals), refusals
    assert "descriptor limit 1024 leaves room for " in outcome.log, "the start says the caps cannot be met"
    assert len(refusals) <= 2 * 2, refusals
