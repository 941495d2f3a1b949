"""The control socket and the operator commands: protocol, permissions, audit, persistence of rule state.

The server runs on an event loop in a background thread; clients are the library's `call`/`stream`
and the real `gatewayd` command in a subprocess, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from accounts import call_as
from test_rules_fixtures import build, plant_rules, point_table

from gatewayd.config import parse_config
from gatewayd.operator.control import (
    CommandError,
    ControlError,
    ControlServer,
    call,
    rule_handlers,
    socket_path,
    stream,
)
from gatewayd.values.points import PointTable
from gatewayd.config.model import point_tags
from gatewayd.values.scan import Scanner, build_engine
from core.types import Quality
from hil_tests.storerows import outbox_samples
from store import Store
from tests.uplinkschemas import event_problems

ROOT = Path(__file__).resolve().parent.parent
WALL = 1_700_000_000.0
ME = pwd.getpwuid(os.getuid()).pw_name


class Served:
    """A ControlServer on its own loop thread; `run(coro)` runs a coroutine on that loop."""

    def __init__(self, path: Path, access=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ControlServer(path, access=access)
        self.path = path

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(runtime: Path, handlers, access=None) -> Iterator[Served]:
    served = Served(socket_path(runtime), access)
    served.server.handlers.update(handlers)
    served.run(served.server.start())
    try:
        yield served
    finally:
        served.close()


def gatewayd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewayd", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------ protocol

def test_socket_is_0660_in_a_0750_directory_and_removed_at_close(runtime: Path):
    with serving(runtime, {}) as served:
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o750
        mode = served.path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert not served.path.exists()


def test_requests_answers_and_refusals_on_one_connection(runtime: Path):
    def echo(request, peer):
        return {"you": peer.user, "uid": peer.uid, "pid": peer.pid, "said": request.get("text")}

    async def later(request, peer):
        await asyncio.sleep(0)
        return 42

    def refuse(request, peer):
        raise CommandError("not today")

    with serving(runtime, {"echo": echo, "later": later, "refuse": refuse}) as served:
        assert call(served.path, {"cmd": "echo", "text": "hi"}) == {"you": ME, "uid": os.getuid(),
                                                                    "pid": os.getpid(), "said": "hi"}
        with socket.socket(socket.AF_UNIX) as sock, sock.makefile("rwb") as channel:
            sock.connect(str(served.path))
            answers = []
            for line in (b'{"cmd": "refuse"}\n', b"not json\n", b'{"cmd": "nope"}\n', b'["cmd"]\n',
                         b'{"cmd": "later"}\n'):
                channel.write(line)
                channel.flush()
                answers.append(json.loads(channel.readline()))
        assert answers[0] == {"ok": False, "error": "not today"}
        assert answers[1]["ok"] is False and answers[1]["error"].startswith("not JSON")
        assert answers[2] == {"ok": False, "error": "unknown command 'nope'; known: echo, later, refuse"}
        assert answers[3] == {"ok": False, "error": 'a request is a JSON object with "cmd"'}
        assert answers[4] == {"ok": True, "result": 42}, "the connection survived every refusal"


def test_a_handler_may_stream_with_an_async_generator(runtime: Path):
    async def count(request, peer):
        for n in range(request["upto"]):
            yield {"n": n}

    async def failing(request, peer):
        yield 1
        raise CommandError("source went away")

    with serving(runtime, {"count": count, "failing": failing}) as served:
        assert list(stream(served.path, {"cmd": "count", "upto": 3})) == [{"n": 0}, {"n": 1}, {"n": 2}]
        received = []
        with pytest.raises(CommandError, match="source went away"):
            for item in stream(served.path, {"cmd": "failing"}):
                received.append(item)
        assert received == [1]


def test_a_stale_socket_is_replaced_and_a_live_one_refused(runtime: Path):
    runtime.mkdir(mode=0o750)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path(runtime)))
    stale.close()  # a crashed daemon's socket file: nobody listens
    with serving(runtime, {"ping": lambda request, peer: "pong"}) as served:
        assert call(served.path, {"cmd": "ping"}) == "pong"
        second = Served(served.path)
        with pytest.raises(ControlError, match="another gatewayd answers"):
            second.run(second.server.start())
        second.close()
        assert call(served.path, {"cmd": "ping"}) == "pong", "the running daemon keeps its socket"


def test_cli_says_when_the_daemon_is_not_running(runtime: Path):
    result = gatewayd("alarms", "--socket", str(socket_path(runtime)))
    assert result.returncode == 1
    assert result.stderr.strip() == f"gatewayd alarms: gatewayd is not running (nothing answers on " \
                                    f"{socket_path(runtime)})"
    with pytest.raises(ControlError, match="not running"):
        call(socket_path(runtime), {"cmd": "alarms"})


@pytest.mark.parametrize("text, error", [
    ("gateway:\n  id: [GW\n", r"bad\.yaml:3: YAML syntax: "),
    ("", r"bad\.yaml: the file is empty; "),
    ("- gateway\n", r"bad\.yaml:1: expected a mapping"),
])
def test_reload_of_a_file_that_names_no_socket_is_refused_without_asking_another_daemon(
        runtime: Path, tmp_path: Path, text: str, error: str):
    """The CLI finds the socket through the file's gateway.runtime_dir: a file it cannot read as YAML is
    refused with its file:line error, not sent to whichever daemon listens on the default socket."""
    asked = []
    environment = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}
    with serving(runtime, {"reload": lambda request, peer: asked.append(request) or {"applied": False,
                                                                                       "sha256": "0f" * 32}}):
        default = tmp_path / "default.yaml"
        default.write_text("gateway: {id: GW-1}\n")  # invalid (no devices), but says: the default socket
        assert gatewayd("reload", "-c", str(default), env=environment).returncode == 0 and len(asked) == 1
        broken = tmp_path / "bad.yaml"
        broken.write_text(text)
        result = gatewayd("reload", "-c", str(broken), env=environment)
    assert result.returncode == 1 and len(asked) == 1, "the daemon on the default socket was not asked"
    refused = r"gatewayd reload: refused: configuration invalid, the running one stays:\n"
    assert re.match(refused + re.escape(f"{tmp_path}/") + error, result.stderr), result.stderr
    assert "not running" not in result.stderr


def test_file_permissions_decide_who_may_act(runtime: Path):
    """An account outside the socket's group is refused by the kernel; a group member gets in and is
    audited under its own account, as SO_PEERCRED reports it. (Acting as other accounts needs root,
    as the test suite does: see README.)"""
    engine = build(now=0.0, wall=WALL)
    committed = []
    nobody = pwd.getpwnam("nobody")
    request = {"cmd": "ack", "alarm": "PT101.HH", "reason": "seen"}
    with serving(runtime, rule_handlers(engine, committed.extend)) as served:
        engine.evaluate(*point_table(PT101=95.0), 1.0, WALL + 1)
        outsider = call_as((nobody.pw_uid, nobody.pw_gid, []), served.path, request)
        assert outsider[0] == "ControlError" and outsider[1].startswith("permission denied on control.sock")
        assert not committed
        member = call_as((nobody.pw_uid, nobody.pw_gid, [served.path.stat().st_gid]), served.path, request)
        assert member[0] == "ok", member
    audit = next(event for event in committed if event.kind == "audit")
    assert (audit.data["user"], audit.data["account"], audit.data["uid"]) == ("nobody", "nobody", nobody.pw_uid)
    assert event_problems(committed) == []


# ------------------------------------------------------------------------------------------ rule commands

def test_ack_is_audited_with_the_kernel_account_and_committed(runtime: Path):
    engine = build(now=0.0, wall=WALL)
    committed = []
    engine.evaluate(*point_table(PT101=95.0), 1.0, WALL + 1)
    with serving(runtime, rule_handlers(engine, committed.extend)) as served:
        listed = call(served.path, {"cmd": "alarms"})
        hh = next(item for item in listed if item["id"] == "PT101.HH")
        assert (hh["state"], hh["priority"], hh["value"], hh["since"]) == ("UNACK", "high", 95.0, WALL + 1)
        with pytest.raises(CommandError, match=f"'user' is not accepted: the daemon takes who you are from the "
                                               f"kernel \\(account {ME}\\)"):
            call(served.path, {"cmd": "ack", "alarm": "PT101.HH", "reason": "seen", "user": "j.wang"})
        result = call(served.path, {"cmd": "ack", "alarm": "PT101.HH", "reason": "seen on the DCS"})
        with pytest.raises(CommandError, match="nothing to acknowledge: the alarm is ACKED"):
            call(served.path, {"cmd": "ack", "alarm": "PT101.HH"})
        with pytest.raises(CommandError, match="no alarm 'PT101.HX'; did you mean"):
            call(served.path, {"cmd": "ack", "alarm": "PT101.HX"})
    state, audit = committed
    assert (state.kind, state.data["state"], state.data["previous"]) == ("alarm", "ACKED", "UNACK")
    assert audit.kind == "audit"
    assert {key: audit.data[key] for key in ("user", "action", "target", "reason", "account", "uid")} == \
        {"user": ME, "action": "ack", "target": "PT101.HH", "reason": "seen on the DCS", "account": ME,
         "uid": os.getuid()}
    assert "operator" not in audit.data
    assert audit.message == f"{ME} ack PT101.HH: seen on the DCS"
    assert [event["message"] for event in result["events"]] == [state.message, audit.message]
    assert event_problems(committed) == []


def test_shelving_beyond_the_maximum_is_refused_with_the_reason(runtime: Path):
    engine = build(now=0.0, wall=WALL)  # rules.shelving max 10 s
    committed = []
    with serving(runtime, rule_handlers(engine, committed.extend)) as served:
        with pytest.raises(CommandError, match=r"shelving for 11s exceeds the maximum of 10s "
                                               r"\(rules.shelving.max_duration\)"):
            call(served.path, {"cmd": "shelve", "alarm": "TT102.H", "duration": 11, "reason": "replacing TT102"})
        with pytest.raises(CommandError, match="shelve needs a reason"):
            call(served.path, {"cmd": "shelve", "alarm": "TT102.H", "duration": 5})
        with pytest.raises(CommandError, match="'duration' is required"):
            call(served.path, {"cmd": "shelve", "alarm": "TT102.H", "reason": "x"})
        assert not committed, "a refused action changes nothing and records nothing"
        call(served.path, {"cmd": "shelve", "alarm": "TT102.H", "duration": 10, "reason": "replacing TT102"})
    assert [(event.kind, event.data.get("state")) for event in committed] == [("alarm", "SHLVD"), ("audit", "SHLVD")]
    assert event_problems(committed) == []


def as_nobody(served: Served) -> tuple[int, int, list[int]]:
    """Another kernel account than the test's, in the socket's group."""
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid, [served.path.stat().st_gid]


def test_bypass_request_approve_list_revoke(runtime: Path):
    engine = build(now=0.0, wall=WALL)  # SIS-101: max_bypass 10 s
    committed = []
    with serving(runtime, rule_handlers(engine, committed.extend, approval_window=60)) as served:
        request = {"cmd": "bypass_request", "interlock": "SIS-101", "reason": "transmitter swap", "permit": "WO-7",
                   "duration": 8, "measures": "local gauge", "tags": ["PT101"]}
        with pytest.raises(CommandError, match="not tags of this gateway: PT999"):
            call(served.path, {**request, "tags": ["PT999"]})
        with pytest.raises(CommandError, match="exceeds the maximum bypass duration of 10s for SIS-101"):
            call(served.path, {**request, "duration": 60})
        with pytest.raises(CommandError, match="'approved_by', 'requested_by' is not accepted: the daemon takes who "
                                               "you are from the kernel"):
            call(served.path, {**request, "approved_by": "plant.manager", "requested_by": "alice"})
        asked = call(served.path, request)["request"]
        assert (asked["id"], asked["requested_by"], asked["status"] if "status" in asked else "pending") == \
            (1, ME, "pending")
        assert call(served.path, {"cmd": "bypass_list"}) == [], "nothing in force before the approval"
        with pytest.raises(CommandError, match=f"request 1 was made by {ME}: it must be approved by another account"):
            call(served.path, {"cmd": "approve", "id": 1})
        assert [item["id"] for item in call(served.path, {"cmd": "requests"})] == [1]
        approved = call_as(as_nobody(served), served.path, {"cmd": "approve", "id": 1, "kind": "bypass"})
        assert approved[0] == "ok", approved
        record = approved[1]["authorization"]
        assert (record["id"], record["interlock"], record["permit"], record["affected_tags"], record["requested_by"],
                record["approved_by"], record["request"]) == (1, "SIS-101", "WO-7", ["PT101"], ME, "nobody", 1)
        assert [item["id"] for item in call(served.path, {"cmd": "bypass_list"})] == [1]
        call(served.path, {"cmd": "bypass_revoke", "id": 1, "reason": "work done"})
        assert call(served.path, {"cmd": "bypass_list"}) == []
        assert call(served.path, {"cmd": "bypass_list", "all": True})[0]["status"] == "revoked"
        interlocks = call(served.path, {"cmd": "interlocks"})
    assert [item["id"] for item in interlocks] == ["SIS-101", "SIS-102"]
    audits = [event for event in committed if event.kind == "audit"]
    assert [(a.data["action"], a.data["user"], a.data["account"], a.message.split()[0]) for a in audits] == \
        [("bypass_request", ME, ME, ME), ("bypass_authorize", "nobody", "nobody", "nobody"),
         ("bypass_revoke", ME, ME, ME)], "each step its own record, headed by the kernel account"
    assert event_problems(committed) == []


def test_cli_prints_readable_tables(runtime: Path):
    engine = build(now=0.0, wall=WALL)
    engine.evaluate(*point_table(PT101=95.0, XS101=1.0), 1.0, WALL + 1)
    with serving(runtime, rule_handlers(engine, lambda events: None)) as served:
        where = ("--socket", str(served.path))
        alarms = gatewayd("alarms", *where)
        interlocks = gatewayd("interlocks", *where)
        shelve = gatewayd("shelve", "TT102.H", "--for", "2h", "--reason", "r", *where)
        asking = gatewayd("bypass", "request", "SIS-101", "--reason", "swap", "--permit", "WO-7", "--for", "5s",
                          "--measures", "watch", *where)
        own = gatewayd("bypass", "approve", "1", *where)
        pending = gatewayd("requests", *where)
        as_json = gatewayd("requests", "--json", *where)
    header, *rows = alarms.stdout.splitlines()
    assert header.split() == ["ALARM", "STATE", "PRIORITY", "VALUE", "SINCE", "NOTE"]
    hh = next(row for row in rows if row.startswith("PT101.HH "))
    assert hh.split()[:4] == ["PT101.HH", "UNACK", "high", "95"] and "latched" in hh
    assert interlocks.stdout.splitlines()[0].split()[:3] == ["INTERLOCK", "UNIT", "STATUS"]
    assert interlocks.stdout.splitlines()[1].split()[:3] == ["SIS-101", "U100", "bypassed"]
    assert shelve.returncode == 1
    assert shelve.stderr.strip() == "gatewayd shelve: refused: shelving for 2h exceeds the maximum of 10s " \
                                    "(rules.shelving.max_duration)"
    assert asking.returncode == 0 and asking.stdout.startswith(
        "request 1: bypass SIS-101, permit WO-7; it takes effect when another account with the approver role runs "
        "`gatewayd approve 1` before "), asking.stderr
    assert own.returncode == 1 and own.stderr.strip() == (f"gatewayd bypass approve: refused: request 1 was made by "
                                                          f"{ME}: it must be approved by another account, not by the "
                                                          "one that asked")
    assert pending.stdout.splitlines()[0].split()[:4] == ["ID", "ASKS", "TO", "TARGET"]
    assert pending.stdout.splitlines()[1].split()[:5] == ["1", "bypass", "SIS-101", "pending", "5s"]
    assert json.loads(as_json.stdout)[0]["reason"] == "swap"


def test_a_highly_managed_alarm_is_shelved_only_when_another_account_approves_the_request(runtime: Path):
    rules, tag_alarms = plant_rules()
    gas = tuple(dataclasses.replace(channel, behaviour2=dataclasses.replace(channel.behaviour2, highly_managed=True))
                for channel in rules.gas)
    engine = build(rules=dataclasses.replace(rules, gas=gas), tag_alarms=tag_alarms, now=0.0, wall=WALL)
    committed = []
    engine.evaluate(*point_table(AT201=45.0), 1.0, WALL + 1)
    with serving(runtime, rule_handlers(engine, committed.extend)) as served:
        where = ("--socket", str(served.path))
        bare = gatewayd("shelve", "AT201.GAS2", "--for", "5s", "--reason", "calibration", *where)
        asked = gatewayd("shelve", "AT201.GAS2", "--for", "5s", "--reason", "calibration", "--permit", "PTW-9", *where)
        own = gatewayd("approve", "1", *where)
        assert call(served.path, {"cmd": "alarms"})[0]["state"] == "UNACK", "requested, not shelved"
        approved = call_as(as_nobody(served), served.path, {"cmd": "approve", "id": 1})
        listed = call(served.path, {"cmd": "alarms"})
    assert bare.returncode == 1 and bare.stderr.strip() == (
        "gatewayd shelve: refused: AT201.GAS2 is a highly managed alarm: shelving it needs a request with a permit and "
        "a duration (--permit, --for), which another account approves")
    assert asked.returncode == 0 and asked.stdout.startswith("request 1: shelve AT201.GAS2, permit PTW-9"), asked.stderr
    assert own.returncode == 1 and f"request 1 was made by {ME}" in own.stderr
    assert approved[0] == "ok", approved
    audits = [event for event in committed if event.kind == "audit"]
    assert [(a.data["action"], a.data["account"]) for a in audits] == [("shelve_request", ME), ("shelve", "nobody")]
    assert {key: audits[1].data["authorization"][key] for key in ("permit", "approved_by", "requested_by")} == \
        {"permit": "PTW-9", "approved_by": "nobody", "requested_by": ME}
    gas2 = next(item for item in listed if item["id"] == "AT201.GAS2")
    assert (gas2["state"], gas2["class"], gas2["authorization"]["permit"]) == ("SHLVD", "highly_managed", "PTW-9")
    assert event_problems(committed) == []


def test_every_alarm_action_is_audited_as_its_schema_says(runtime: Path):
    """docs/schemas/events/audit.json and alarm.json against what each operator command commits."""
    rules, tag_alarms = plant_rules()
    gas = tuple(dataclasses.replace(channel, behaviour2=dataclasses.replace(channel.behaviour2, highly_managed=True))
                for channel in rules.gas)
    engine = build(rules=dataclasses.replace(rules, gas=gas), tag_alarms=tag_alarms, now=0.0, wall=WALL)
    committed = []
    engine.evaluate(*point_table(PT101=95.0, AT201=45.0), 1.0, WALL + 1)
    with serving(runtime, rule_handlers(engine, committed.extend)) as served:
        for request in ({"cmd": "ack", "alarm": "PT101.HH", "reason": "seen"},
                        {"cmd": "shelve", "alarm": "PT101.HH", "duration": 5, "one_shot": True, "reason": "noisy"},
                        {"cmd": "unshelve", "alarm": "PT101.HH", "reason": "fixed"},
                        {"cmd": "out_of_service", "alarm": "TT102.H", "reason": "transmitter out"},
                        {"cmd": "return_to_service", "alarm": "TT102.H", "reason": "transmitter back"},
                        {"cmd": "out_of_service", "alarm": "AT201.GAS2", "duration": 60, "permit": "PTW-1",
                         "reason": "detector swap"}):
            call(served.path, request)
        engine.evaluate(*point_table(PT101=70.0, TT102=45.0), 4.0, WALL + 4)  # RUNAWAY latches
        engine.evaluate(*point_table(PT101=70.0, TT102=45.0), 7.0, WALL + 7)
        engine.evaluate(*point_table(), 8.0, WALL + 8)
        call(served.path, {"cmd": "reset", "alarm": "RUNAWAY", "reason": "cause removed"})
    actions = [event.data["action"] for event in committed if event.kind == "audit"]
    assert actions == ["ack", "shelve", "unshelve", "out_of_service", "return_to_service", "out_of_service_request",
                       "reset"]
    assert event_problems(committed) == []


# ------------------------------------------------------------------------------------------ persistence

def test_store_keeps_named_state_documents(tmp_path: Path):
    store = Store.open(tmp_path / "g.db")
    assert store.load_state("rules") is None
    store.save_state("rules", '{"a": 1}')
    store.save_state("rules", '{"a": 2}')
    store.close()
    reopened = Store.open(tmp_path / "g.db")
    assert reopened.load_state("rules") == '{"a": 2}'
    reopened.close()


CONFIG = """
gateway: {id: GW-SCAN}
devices:
  - name: plc
    driver: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: PT101, address: 0, range: [0, 4], alarms: {hh: 3.6, h: 3.2}}
      - {name: XS101_BYP, address: 2, type: uint16}
uplink: {host: broker, signing_key: k}
rules:
  units: {U100: {max_bypassed: 1}}
  interlocks:
    - {id: SIS-101, unit: U100, bypass: XS101_BYP, trip: "PT101 >= 3.8", max_bypass: 8h}
"""


def test_scanner_forwards_interlock_state_and_the_rule_state_survives_a_restart(tmp_path: Path):
    config = parse_config(CONFIG, tmp_path / "config.yaml")

    def start():
        table = PointTable(point_tags(config))
        store = Store.open(tmp_path / "g.db")
        scanner = Scanner(table, store.tag_ids([tag.name for tag in table.tags]), store, build_engine(config, table))
        scanner.restore_state()
        return table, store, scanner

    table, store, scanner = start()
    assert [tag.name for tag in table.tags] == ["PT101", "XS101_BYP", "IL.SIS-101"]
    table.write(table.rows_of(["PT101", "XS101_BYP"]), np.array([3.7, 1.0]))
    scanner.tick()
    scanner.commit(scanner.engine.act("ack", "PT101.HH", "alice", "seen"))
    rows = [(name, value, quality) for _, _, name, _, value, quality in outbox_samples(store._conn)
            if name == "IL.SIS-101"]
    assert rows == [("IL.SIS-101", 0.0, Quality.GOOD)], "bypassed: in service 0, as an ordinary sample"
    bodies = [json.loads(body) for (body,) in store._conn.execute("SELECT body FROM outbox WHERE kind = 1")]
    assert [(b["kind"], b["data"].get("state") or b["data"].get("event")) for b in bodies] == \
        [("alarm", "UNACK"), ("alarm", "UNACK"), ("bypass", "started"), ("bypass", "unauthorized"),
         ("alarm", "ACKED"), ("audit", "ACKED")]
    store.close()  # a crash after the action: the state was saved with it

    table, store, scanner = start()
    states = {item["id"]: item["state"] for item in scanner.engine.alarms()}
    assert states == {"PT101.HH": "ACKED", "PT101.H": "UNACK"}
    table.write(table.rows_of(["PT101", "XS101_BYP"]), np.array([3.7, 1.0]))
    scanner.tick()
    assert {item["id"]: item["state"] for item in scanner.engine.alarms()} == states, "no re-raise after restart"
    assert scanner.engine.interlocks()[0]["status"] == "bypassed"
    store.close()


def test_a_trip_saves_the_rule_state_so_its_consequential_suppression_survives_a_crash(tmp_path: Path):
    source = CONFIG.replace('trip: "PT101 >= 3.8", max_bypass: 8h}',
                            'trip: "LT102 >= 5", max_bypass: 8h, consequential: {alarms: [PT101.H], for: 10m}}')
    source = source.replace("      - {name: XS101_BYP,", "      - {name: LT102, address: 3}\n      - {name: XS101_BYP,")
    config = parse_config(source, tmp_path / "config.yaml")
    table = PointTable(point_tags(config))
    store = Store.open(tmp_path / "g.db")
    scanner = Scanner(table, store.tag_ids([tag.name for tag in table.tags]), store, build_engine(config, table))
    table.write(table.rows_of(["PT101", "LT102", "XS101_BYP"]), np.array([1.0, 6.0, 0.0]))
    scanner.tick()  # the trip, and no alarm or operator action: the trip itself makes the scan save the state
    kinds = [json.loads(body)["kind"] for (body,) in store._conn.execute("SELECT body FROM outbox WHERE kind = 1")]
    assert kinds == ["trip"]
    saved = json.loads(store.load_state("rules"))
    assert saved["interlocks"]["SIS-101"]["consequences_until"] is not None
    store.close()
