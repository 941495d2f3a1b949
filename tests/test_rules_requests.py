"""Four eyes in two steps (rules.requests through the engine): a bypass or a highly managed alarm's shelve
is requested by one account and takes effect only when another approves it within the window."""

from __future__ import annotations

import json

import pytest
from test_rules_managed import WALL, build, listed, scan

from rules.isa import ActionError
from rules.requests import RequestBook

WINDOW = 600.0
BYPASS = {"reason": "transmitter swap", "permit": "WO-7", "duration": 8.0, "measures": "local gauge",
          "affected_tags": ["PT101"], "window": WINDOW}


def ask_bypass(engine, who="alice", at=0.0):
    return engine.request_bypass("SIS-101", requested_by=who, now_wall=WALL + at, **BYPASS)


def test_a_bypass_request_takes_effect_only_with_another_accounts_approval():
    engine = build("reference")
    asked = ask_bypass(engine)
    assert engine.bypass_list(now_wall=WALL + 1) == [], "a request authorizes nothing"
    [audit] = asked
    request = audit.data["request"]
    assert (audit.kind, audit.data["user"], audit.data["action"], request["id"], request["expires_at"]) == \
        ("audit", "alice", "bypass_request", 1, WALL + WINDOW)
    assert audit.message == ("alice requests bypass SIS-101 for 8s (request 1, permit WO-7, expires unless approved "
                             "by another account): transmitter swap")
    assert [item["status"] for item in engine.request_list(now_wall=WALL + 1)] == ["pending"]

    approved = engine.approve(1, approved_by="bob", now_wall=WALL + 60)
    [audit] = approved
    authorization = audit.data["authorization"]
    assert (audit.data["user"], audit.data["action"], audit.data["request"]["approved_by"],
            audit.data["request"]["approved_at"]) == ("bob", "bypass_authorize", "bob", WALL + 60)
    assert audit.message == "bob approves request 1 of alice: bypass SIS-101 for 8s, permit WO-7: transmitter swap"
    assert (authorization["requested_by"], authorization["approved_by"], authorization["request"],
            authorization["start"], authorization["measures"], authorization["affected_tags"]) == \
        ("alice", "bob", 1, WALL + 60, "local gauge", ["PT101"]), "the duration counts from the approval"
    assert [item["status"] for item in engine.bypass_list(now_wall=WALL + 61)] == ["in_force"]
    assert engine.request_list(now_wall=WALL + 61) == []
    assert engine.request_list(include_closed=True, now_wall=WALL + 61)[0]["status"] == "approved"
    with pytest.raises(ActionError, match="request 1 was already approved by bob"):
        engine.approve(1, approved_by="carol", now_wall=WALL + 62)


@pytest.mark.parametrize("approver", ["alice", "ALICE", " alice "])
def test_the_requesting_account_cannot_approve_its_own_request(approver):
    engine = build("reference")
    ask_bypass(engine)
    with pytest.raises(ActionError, match="request 1 was made by alice: it must be approved by another account"):
        engine.approve(1, approved_by=approver, now_wall=WALL + 1)
    assert engine.bypass_list(now_wall=WALL + 2) == [] and engine.request_list(now_wall=WALL + 2)[0]["id"] == 1


def test_a_request_expires_exactly_at_the_end_of_its_window():
    engine = build("reference")
    ask_bypass(engine, at=0.0)
    ask_bypass(engine, at=0.0)
    engine.approve(1, approved_by="bob", now_wall=WALL + WINDOW - 0.001)
    with pytest.raises(ActionError, match=r"request 2 \(bypass SIS-101 for 8s\) expired: it was not approved within "
                                          r"10m; alice must request it again"):
        engine.approve(2, approved_by="bob", now_wall=WALL + WINDOW)
    statuses = {item["id"]: item["status"] for item in engine.request_list(include_closed=True,
                                                                            now_wall=WALL + WINDOW)}
    assert statuses == {1: "approved", 2: "expired"}
    assert [item["id"] for item in engine.request_list(now_wall=WALL + WINDOW - 0.001)] == [2], "pending till then"


def test_unknown_requests_and_requests_that_could_never_be_granted_are_refused():
    engine = build("reference")
    with pytest.raises(ActionError, match=r"no request 7 \(see `gatewayd requests --all`\)"):
        engine.approve(7, approved_by="bob", now_wall=WALL)
    with pytest.raises(ActionError, match="exceeds the maximum bypass duration"):
        engine.request_bypass("SIS-101", requested_by="alice", now_wall=WALL, **{**BYPASS, "duration": 10 ** 6})
    with pytest.raises(ActionError, match="unknown interlock 'SIS-999'"):
        engine.request_bypass("SIS-999", requested_by="alice", now_wall=WALL, **BYPASS)
    with pytest.raises(ActionError, match="a bypass authorization needs measures"):
        engine.request_bypass("SIS-101", requested_by="alice", now_wall=WALL, **{**BYPASS, "measures": " "})
    with pytest.raises(ActionError, match="PT101.HH is not a highly managed alarm: shelve it directly"):
        engine.request_action("shelve", "PT101.HH", reason="r", permit="P", requested_by="alice", duration=60,
                              window=WINDOW, now_wall=WALL)
    with pytest.raises(ActionError, match="for 3h exceeds the maximum of 2h"):
        engine.request_action("shelve", "AT201.GAS2", reason="r", permit="P", requested_by="alice",
                              duration=3 * 3600, window=WINDOW, now_wall=WALL)
    assert engine.request_list(include_closed=True, now_wall=WALL) == [], "nothing refused is kept"


def test_a_highly_managed_alarm_is_shelved_by_the_approval_not_by_the_request():
    engine = build("reference")
    scan(engine, 1.0, AT201=45.0)
    [asked] = engine.request_action("shelve", "AT201.GAS2", reason="detector under test", permit="PTW-7",
                                    requested_by="alice", duration=600.0, window=WINDOW, now_wall=WALL + 2)
    assert (asked.data["action"], asked.data["request"]["kind"]) == ("shelve_request", "shelve")
    assert listed(engine, "AT201.GAS2")["state"] == "UNACK", "the request alone shelves nothing"
    events = engine.approve(1, approved_by="bob", now_monotonic=3.0, now_wall=WALL + 3)
    assert [(event.kind, event.data.get("state")) for event in events] == [("gas_alarm", "SHLVD"), ("audit", "SHLVD")]
    audit = events[1]
    assert (audit.data["user"], audit.data["action"], audit.data["authorization"]["approved_by"],
            audit.data["authorization"]["requested_by"], audit.data["request"]["id"]) == \
        ("bob", "shelve", "bob", "alice", 1)
    assert audit.message.startswith("bob approves request 1 of alice: shelve AT201.GAS2 for 10m, permit PTW-7")
    item = listed(engine, "AT201.GAS2")
    assert (item["state"], item["authorization"]["approved_by"]) == ("SHLVD", "bob")


def test_pending_requests_survive_a_restart_and_keep_their_numbers():
    engine = build("reference")
    ask_bypass(engine)
    saved = json.loads(json.dumps(engine.state_dict()))
    again = build("reference")
    again.restore(saved, now_monotonic=0.0, now_wall=WALL + 5)
    assert [item["id"] for item in again.request_list(now_wall=WALL + 5)] == [1]
    ask_bypass(again, at=6)
    assert [item["id"] for item in again.request_list(now_wall=WALL + 6)] == [1, 2]
    again.approve(1, approved_by="bob", now_wall=WALL + 7)
    assert again.bypass_list(now_wall=WALL + 8)[0]["request"] == 1


def test_the_book_keeps_pending_requests_and_a_bounded_tail_of_closed_ones(monkeypatch):
    import rules.requests

    monkeypatch.setattr(rules.requests, "CLOSED_KEPT", 3)
    book = RequestBook()
    for n in range(6):
        book.add("bypass", "SIS-101", requested_by="a", reason="r", permit="p", duration=1.0, details={},
                 now=float(n), window=1.0)
    pending = book.add("bypass", "SIS-101", requested_by="a", reason="r", permit="p", duration=1.0, details={},
                       now=100.0, window=10.0)
    assert [request.id for request in book.requests] == [4, 5, 6, pending.id]
