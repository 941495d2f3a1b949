"""The browse tool's pure parts: portable node ids, access levels, and the session settings it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua

from gatewayd.commissioning.browse import BrowseError, access_text, browse_settings, portable_id, resolve

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:server", "urn:plant"]


def test_node_ids_carry_their_namespace_uri_outside_namespace_zero():
    assert portable_id(ua.NodeId("Tank;Level", 2), NAMESPACES) == "nsu=urn:plant;s=Tank;Level"
    assert portable_id(ua.NodeId(1001, 1), NAMESPACES) == "nsu=urn:server;i=1001"
    assert portable_id(ua.NodeId(2258, 0), NAMESPACES) == "i=2258"
    assert resolve(ua.NodeId.from_string("nsu=urn:plant;s=X"), ["a", "b", "c", "urn:plant"]) == ua.NodeId("X", 3)
    with pytest.raises(BrowseError, match="no namespace urn:gone"):
        resolve(ua.NodeId.from_string("nsu=urn:gone;s=X"), NAMESPACES)


def test_access_levels():
    assert access_text(0b1) == "read"
    assert access_text(0b111) == "read/write/history"
    assert access_text(0) == "none"


def secured(tmp_path: Path, **overrides):
    arguments = {"endpoint": "opc.tcp://h:4840", "security_policy": "Basic256Sha256", "security_mode": None,
                 "certificate": str(tmp_path / "c.der"), "private_key": str(tmp_path / "k.pem"),
                 "trust_store": str(tmp_path), "username": None, "password_file": None, **overrides}
    return browse_settings(**arguments)


def test_settings_are_checked_as_check_config_checks_a_device(tmp_path: Path):
    (tmp_path / "k.pem").write_text("key")
    (tmp_path / "k.pem").chmod(0o600)
    assert secured(tmp_path).security_mode == "SignAndEncrypt"
    with pytest.raises(BrowseError, match="not an OPC UA endpoint"):
        secured(tmp_path, endpoint="http://h")
    with pytest.raises(BrowseError, match="needs --certificate, --trust-store"):
        secured(tmp_path, certificate=None, trust_store=None)
    with pytest.raises(BrowseError, match="--user and --password-file go together"):
        secured(tmp_path, username="op")
    loose = tmp_path / "password"
    loose.write_text("secret")
    loose.chmod(0o644)
    with pytest.raises(BrowseError, match="OPC UA password file"):
        secured(tmp_path, username="op", password_file=str(loose))
    with pytest.raises(BrowseError, match="--certificate need --security Basic256Sha256"):
        secured(tmp_path, security_policy="None", private_key=None, trust_store=None)
