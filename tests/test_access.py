"""Roles on the control socket: resolved from real accounts and groups (made for the test with groupadd
and useradd, removed after), judged per command, refusals logged once per account and period."""

from __future__ import annotations

import grp
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounts import call_as, throwaway_accounts, unique_prefix
from test_control import WALL, serving
from test_rules_fixtures import build, point_table

from gatewayd.operator.access import APPROVER, CACHE_SECONDS, COMMAND_ROLES, OPERATOR, VIEW, Access
from gatewayd.config.model import ControlConfig
from gatewayd.operator.control import CommandError, Peer, call, rule_handlers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plant() -> Iterator[tuple[ControlConfig, dict]]:
    """Groups view/operator/approver plus the socket's, and one account per combination."""
    p = unique_prefix()
    view, operator, approver = f"{p}v", f"{p}o", f"{p}a"
    users = {f"{p}viewer": [view], f"{p}op": [operator], f"{p}appr": [approver], f"{p}both": [operator, approver],
             f"{p}none": []}
    with throwaway_accounts([view, operator, approver], users) as accounts:
        yield ControlConfig(view, operator, approver), {name[len(p):]: entry for name, entry in accounts.items()}


def peer(entry) -> Peer:
    return Peer(os.getpid(), entry.pw_uid, entry.pw_gid, entry.pw_name)


def test_roles_come_from_the_accounts_groups(plant):
    config, accounts = plant
    access = Access(config, daemon_uid=65534 + 1)
    roles = {name: access.grant(peer(entry)).roles for name, entry in accounts.items()}
    assert roles == {"viewer": {VIEW}, "op": {VIEW, OPERATOR}, "appr": {VIEW, APPROVER},
                     "both": {VIEW, OPERATOR, APPROVER}, "none": set()}
    assert access.grant(Peer(1, 0, 0, "root")).roles == {VIEW, OPERATOR, APPROVER}, "root holds every role"
    daemon = accounts["none"]
    assert Access(config, daemon_uid=daemon.pw_uid).grant(peer(daemon)).everything_because == "the daemon's account"


def test_the_primary_group_counts_and_a_missing_group_gives_nobody_its_role(plant):
    config, accounts = plant
    viewer = accounts["viewer"]
    as_primary = Peer(1, viewer.pw_uid, grp.getgrnam(config.operator_group).gr_gid, viewer.pw_name)
    assert Access(config).grant(as_primary).roles == {VIEW, OPERATOR}, "the gid the process runs with"
    nameless = Peer(1, 64999, grp.getgrnam(config.view_group).gr_gid, "64999")
    assert Access(config).grant(nameless).roles == {VIEW}, "an account without a name: its gid alone"
    renamed = ControlConfig(config.view_group, "no-such-group-here", config.approver_group)
    assert Access(renamed).grant(peer(accounts["op"])).roles == set()


def test_a_role_lost_in_etc_group_is_lost_after_the_cache_time(plant):
    config, accounts = plant
    clock = Clock()
    access = Access(config, clock=clock)
    op = peer(accounts["op"])
    access.check("ack", op)
    subprocess.run(["gpasswd", "-d", op.user, config.operator_group], check=True, capture_output=True)
    try:
        clock.now += CACHE_SECONDS - 0.001
        access.check("ack", op)  # still cached
        clock.now += 0.001
        with pytest.raises(CommandError, match="needs the operator role"):
            access.check("ack", op)
    finally:
        subprocess.run(["gpasswd", "-a", op.user, config.operator_group], check=True, capture_output=True)


def test_each_command_needs_its_role_and_the_refusal_says_which(plant):
    config, accounts = plant
    access = Access(config)
    viewer, op, appr = (peer(accounts[name]) for name in ("viewer", "op", "appr"))
    for command, role in COMMAND_ROLES.items():
        for who in (viewer, op, appr):
            allowed = role == VIEW or (role == OPERATOR and who is op) or (role == APPROVER and who is appr)
            if allowed:
                access.check(command, who)
            else:
                with pytest.raises(CommandError):
                    access.check(command, who)
    with pytest.raises(CommandError) as refused:
        access.check("ack", viewer)
    assert str(refused.value) == (f"ack needs the operator role (membership of group {config.operator_group}); "
                                  f"account {viewer.user} holds view")
    with pytest.raises(CommandError, match=f"approve needs the approver role .*account {op.user} holds view, operator"):
        access.check("approve", op)
    with pytest.raises(CommandError, match="'debug' is open to root and the daemon's account only"):
        access.check("debug", op)
    access.check("debug", Peer(1, 0, 0, "root"))


def test_refused_commands_are_logged_once_per_account_and_period(plant, runtime: Path, caplog):
    """Five refused commands of one account cost one journal line; the next period's line counts them."""
    config, accounts = plant
    engine = build(now=0.0, wall=WALL)
    caplog.set_level(logging.WARNING, "gatewayd.limits")
    with serving(runtime, rule_handlers(engine, lambda events: None), access=Access(config)) as served:
        clock = Clock()
        served.server.refusals.clock = clock
        viewer = accounts["viewer"]
        groups = os.getgrouplist(viewer.pw_name, viewer.pw_gid) + [served.path.stat().st_gid]
        as_viewer = (viewer.pw_uid, viewer.pw_gid, groups)
        answers = [call_as(as_viewer, served.path, {"cmd": "ack", "alarm": "PT101.HH"}) for _ in range(5)]
        assert [answer[0] for answer in answers] == ["CommandError"] * 5
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 1 and lines[0].startswith(f"control socket: refused account {viewer.pw_name} (uid "
                                                       f"{viewer.pw_uid}): ack: ack needs the operator role")
        clock.now += served.server.refusals.interval
        call_as(as_viewer, served.path, {"cmd": "reset", "alarm": "PT101.HH"})
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 and "reset needs the operator role" in lines[1] and "(4 more refused" in lines[1]


def test_through_the_socket_the_kernel_account_decides(plant, runtime: Path):
    """Real accounts as real peers: the viewer reads and is refused an ack, the operator acks and the
    audit record is headed by its account; the socket's own permissions still keep outsiders out."""
    config, accounts = plant
    engine = build(now=0.0, wall=WALL)
    engine.evaluate(*point_table(PT101=95.0), 1.0, WALL + 1)
    committed = []
    with serving(runtime, rule_handlers(engine, committed.extend), access=Access(config)) as served:
        socket_group = served.path.stat().st_gid
        viewer, op, none = accounts["viewer"], accounts["op"], accounts["none"]
        into_socket = {name: (entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)
                              + [socket_group]) for name, entry in accounts.items()}
        listed = call_as(into_socket["viewer"], served.path, {"cmd": "alarms"})
        assert listed[0] == "ok" and "PT101.HH" in {item["id"] for item in listed[1]}
        refused = call_as(into_socket["viewer"], served.path, {"cmd": "ack", "alarm": "PT101.HH"})
        assert refused == ["CommandError", f"ack needs the operator role (membership of group "
                                           f"{config.operator_group}); account {viewer.pw_name} holds view"]
        nothing = call_as(into_socket["none"], served.path, {"cmd": "alarms"})
        assert nothing[1].endswith(f"account {none.pw_name} holds no role")
        assert not committed
        done = call_as(into_socket["op"], served.path, {"cmd": "ack", "alarm": "PT101.HH", "reason": "seen"})
        assert done[0] == "ok", done
        outsider = call_as(op, served.path, {"cmd": "alarms"})
        assert outsider[0] == "ControlError" and "permission denied" in outsider[1], "roles add to the socket's mode"
    audit = next(event for event in committed if event.kind == "audit")
    assert (audit.message, audit.data["account"], audit.data["uid"]) == \
        (f"{op.pw_name} ack PT101.HH: seen", op.pw_name, op.pw_uid)


def test_through_the_socket_a_bypass_needs_two_kernel_accounts(plant, runtime: Path):
    """The four-eyes rule end to end: an operator asks; the operator cannot approve (no approver role); an
    account holding both roles cannot approve its own request; only another account with the approver
    role brings the authorization into force. Typed-in names are refused outright."""
    config, accounts = plant
    engine = build(now=0.0, wall=WALL)
    committed = []
    with serving(runtime, rule_handlers(engine, committed.extend, approval_window=300),
                 access=Access(config)) as served:
        socket_group = served.path.stat().st_gid

        def as_(name: str, request: dict) -> list:
            entry = accounts[name]
            return call_as((entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid) + [socket_group]),
                           served.path, request)

        ask = {"cmd": "bypass_request", "interlock": "SIS-101", "reason": "transmitter swap", "permit": "WO-7",
               "duration": 8, "measures": "local gauge"}
        op, both, appr = (accounts[name].pw_name for name in ("op", "both", "appr"))
        assert as_("appr", ask)[1] == f"bypass request needs the operator role (membership of group " \
                                      f"{config.operator_group}); account {appr} holds view, approver"
        assert as_("op", {**ask, "approved_by": appr})[1].startswith("'approved_by' is not accepted")
        assert as_("op", ask)[0] == "ok"
        assert as_("op", {"cmd": "approve", "id": 1}) == [
            "CommandError", f"approve needs the approver role (membership of group {config.approver_group}); "
                            f"account {op} holds view, operator"]
        assert as_("both", ask)[0] == "ok"
        assert as_("both", {"cmd": "approve", "id": 2}) == [
            "CommandError", f"request 2 was made by {both}: it must be approved by another account, not by the one "
                            "that asked"]
        assert call(served.path, {"cmd": "bypass_list"}) == [], "nothing in force yet"
        assert as_("both", {"cmd": "approve", "id": 1})[0] == "ok", "an approver approves another's request"
        approved = as_("appr", {"cmd": "approve", "id": 2})
        assert approved[0] == "ok", approved
        listed = as_("viewer", {"cmd": "bypass_list"})[1]
    assert [(item["request"], item["requested_by"], item["approved_by"], item["status"]) for item in listed] == \
        [(2, both, appr, "in_force")], "request 2 superseded request 1's authorization"
    audits = [(event.data["action"], event.data["account"], event.message.split()[0]) for event in committed
              if event.kind == "audit"]
    assert audits == [("bypass_request", op, op), ("bypass_request", both, both), ("bypass_authorize", both, both),
                      ("bypass_authorize", appr, appr)]
