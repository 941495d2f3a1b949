"""A real alarm and a real bypass through the real daemon, driven by the operator CLI.

The tank simulator runs with `--overrides`, so the test forces T-101's level and the bypass switch
(the MARKER register) the way an engineer forces values in a PLC; the gateway itself only reads.
Upstream, a verifying receiver must see the alarm transitions and the audit records, in order,
across a daemon restart that keeps the acknowledged alarm ACKED and the bypass authorization.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import ModbusTcpClient

from gatewayd.operator.control import ControlError, call, socket_path
from tests.accounts import call_as, throwaway_accounts, unique_prefix
from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant
from hil_tests.harness import Broker, Simulator, plant_config, run_cli, stop_all
from hil_tests.sim.layout import MARKER_ADDRESS
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet

ME = pwd.getpwuid(os.getuid()).pw_name
RULES = {
    "units": {"tank-farm-1": {"max_bypassed": 1}},
    "interlocks": [{"id": "SIS-T101", "description": "T-101 high-high level closes the inlet valve",
                    "unit": "tank-farm-1", "bypass": "MARKER", "protects": ["LT101"], "trip": "LT101 >= 9.8",
                    "max_bypass": "8h"}],
}


@contextlib.contextmanager
def overridable_plant(tmp_path: Path, rules: dict[str, Any]) -> Iterator[Plant]:
    """Broker, a tank simulator whose registers a test may force, a receiver, and a config with `rules`;
    every process is stopped at the end."""
    broker = Broker(tmp_path).start()
    plc = Simulator(tmp_path, 9, period=0.5)
    plc.argv.append("--overrides")
    plc.start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, capture_path=tmp_path / "capture.bin",
                        client_id="hil-platform", session_expiry=3600)
    receiver.start()
    config = plant_config(tmp_path, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=9,
                          poll_interval=0.5, scan_interval=0.5, marker=True)
    document = yaml.safe_load(config.read_text())
    document["rules"] = rules
    config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    plant = Plant(tmp_path, broker, plc, receiver, config)
    try:
        yield plant
    finally:
        receiver.stop()
        stop_all(*plant.processes())


@pytest.fixture
def plant(tmp_path: Path):
    with overridable_plant(tmp_path, RULES) as plant:
        yield plant


@pytest.fixture
def approver() -> Iterator[Any]:
    """A real second account, member of a throwaway approver group (the daemon runs as root here)."""
    prefix = unique_prefix()
    with throwaway_accounts([f"{prefix}a"], {f"{prefix}lead": [f"{prefix}a"]}) as accounts:
        yield accounts[f"{prefix}lead"], f"{prefix}a"


def control_section(plant: Plant, approver_group: str) -> None:
    document = yaml.safe_load(plant.config.read_text())
    document["control"] = {"approver_group": approver_group, "approval_window": "10m"}
    plant.config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def force(plant: Plant, address: int, words: list[int]) -> None:
    client = ModbusTcpClient("127.0.0.1", port=plant.plc.port)
    client.connect()
    try:
        assert not client.write_registers(address, words, device_id=1).isError()
    finally:
        client.close()


def force_level(plant: Plant, metres: float) -> None:
    force(plant, 0, list(struct.unpack(">2H", struct.pack(">f", metres))))  # LT101: float32 at holding 0


def ask(plant: Plant, request: dict[str, Any]) -> Any:
    """The daemon's answer over its control socket, or None while it is not up."""
    try:
        return call(socket_path(plant.workdir / "run"), request, timeout=5)
    except ControlError:
        return None


def wait_for(what: str, probe: Callable[[], Any], plant: Plant, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{plant.daemons[-1].log_text()[-3000:]}")


def alarms(plant: Plant) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in ask(plant, {"cmd": "alarms"}) or []}


def cli(plant: Plant, *args: str):
    return run_cli(*args, "-c", str(plant.config))


def test_alarm_ack_bypass_and_restart_reach_upstream_in_order(plant: Plant, approver):
    lead, approver_group = approver
    control_section(plant, approver_group)
    first = plant.start_daemon()
    wait_for("the control socket", lambda: ask(plant, {"cmd": "interlocks"}), plant)
    force_level(plant, 9.5)  # above H 8.5 and HH 9.0
    wait_for("LT101.HH and LT101.H raised",
             lambda: {alarms(plant).get(a, {}).get("state") for a in ("LT101.HH", "LT101.H")} == {"UNACK"}, plant)

    ack = cli(plant, "ack", "LT101.HH", "--reason", "level seen on the DCS")
    assert ack.returncode == 0, ack.stderr
    assert ack.stdout.startswith("LT101.HH ACKED (was UNACK)")
    assert ack.stdout.splitlines()[-1] == f"{ME} ack LT101.HH: level seen on the DCS", "headed by the kernel account"
    refused = cli(plant, "shelve", "LT101.H", "--for", "9h", "--reason", "transmitter drifts")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "gatewayd shelve: refused: shelving for 9h exceeds the maximum of 8h " \
                                     "(rules.shelving.max_duration)"
    asking = cli(plant, "bypass", "request", "SIS-T101", "--reason", "level transmitter recalibration",
                 "--permit", "PTW-0042", "--for", "4h", "--measures", "operator watches the local level gauge",
                 "--tags", "LT101")
    assert asking.returncode == 0 and asking.stdout.startswith("request 1: bypass SIS-T101"), asking.stderr
    own = cli(plant, "bypass", "approve", "1")
    assert own.returncode == 1 and f"request 1 was made by {ME}: it must be approved by another account" in own.stderr
    # the approver is another kernel account, in the socket's group (the daemon's: root's here) and the approvers'
    socket = socket_path(plant.workdir / "run")
    groups = os.getgrouplist(lead.pw_name, lead.pw_gid) + [socket.stat().st_gid]
    approved = call_as((lead.pw_uid, lead.pw_gid, groups), socket, {"cmd": "approve", "id": 1, "kind": "bypass"})
    assert approved[0] == "ok", approved
    force(plant, MARKER_ADDRESS, [1])  # the bypass switch
    wait_for("SIS-T101 bypassed", lambda: (ask(plant, {"cmd": "interlocks"}) or [{}])[0].get("status") == "bypassed",
             plant)

    assert first.stop() == 0
    second = plant.start_daemon()
    wait_for("the first poll after the restart", lambda: alarms(plant).get("LT101.HH", {}).get("value") == 9.5, plant)
    states = {alarm_id: item["state"] for alarm_id, item in alarms(plant).items() if alarm_id.startswith("LT101")}
    assert states == {"LT101.HH": "ACKED", "LT101.H": "UNACK"}, "alarm states survive the restart"
    assert [item["permit"] for item in ask(plant, {"cmd": "bypass_list"})] == ["PTW-0042"]
    interlock = ask(plant, {"cmd": "interlocks"})[0]
    assert (interlock["status"], interlock["flags"]) == ("bypassed", []), "authorized: no unauthorized flag"

    force_level(plant, 5.0)
    wait_for("LT101.HH back to NORM", lambda: "LT101.HH" not in alarms(plant), plant)
    assert alarms(plant)["LT101.H"]["state"] == "RTNUN"
    assert second.stop() == 0
    wait_quiet(plant)

    report = plant.report()
    assert report.ok, report.format()
    events = [event for batch in report.batches for event in batch.body["events"]]
    assert [event["ts"] for event in events] == sorted(event["ts"] for event in events)
    hh = [(event["kind"], event["data"]["state"]) for event in events
          if event["data"].get("alarm") == "LT101.HH" or event["data"].get("target") == "LT101.HH"]
    assert hh == [("alarm", "UNACK"), ("alarm", "ACKED"), ("audit", "ACKED"), ("alarm", "NORM")]
    audit = next(event for event in events if event["kind"] == "audit" and event["data"]["action"] == "ack")
    assert {key: audit["data"][key] for key in ("user", "account", "reason", "target", "previous")} == \
        {"user": ME, "account": ME, "reason": "level seen on the DCS", "target": "LT101.HH", "previous": "UNACK"}

    bypass = [(event["kind"], event["data"].get("action") or event["data"].get("event")) for event in events
              if event["source"] == "SIS-T101"]
    assert bypass == [("audit", "bypass_request"), ("audit", "bypass_authorize"), ("bypass", "started")], \
        "requested, approved, started once, never unauthorized"
    approval = next(event for event in events if event["kind"] == "audit" and
                    event["data"]["action"] == "bypass_authorize")
    authorization = approval["data"]["authorization"]
    assert (authorization["permit"], authorization["requested_by"], authorization["approved_by"],
            authorization["duration"], authorization["affected_tags"], authorization["request"]) == \
        ("PTW-0042", ME, lead.pw_name, 4 * 3600.0, ["LT101"], 1)
    assert (approval["data"]["account"], approval["data"]["uid"]) == (lead.pw_name, lead.pw_uid)
    assert approval["message"].startswith(f"{lead.pw_name} approves request 1 of {ME}: bypass SIS-T101 for 4h")

    good = [value for _, value, quality in samples_by_tag(plant)["IL.SIS-T101"] if quality == Quality.GOOD]
    changes = [value for k, value in enumerate(good) if k == 0 or value != good[k - 1]]
    assert changes == [1.0, 0.0], "the in-service state went upstream as a monitored value: in service, bypassed"
