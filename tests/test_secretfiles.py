"""Secret files (signing key, broker and OPC UA passwords, MQTT and OPC UA client keys) are refused when
anyone but the daemon's account can read them: at check-config with file:line, and again at start.

The tests run as root, so a file can be given to another uid with chown.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatewayd.config import ConfigError, load_config
from gatewayd.assembly import resolve_uplink, secret_files
from gatewayd.keys import KeyFileError, generate_key, load_private_key
from gatewayd.secretfiles import SecretFileError, private_file_problem, read_private, refuse_loose

FOREIGN_UID = 54321  # no account on the test machine

CONFIG = """\
gateway:
  id: GW-1
  state_dir: state
devices:
  - name: ua
    driver: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    security_policy: Basic256Sha256
    certificate: pki/client.der
    private_key: pki/client.key
    trust_store: pki/trusted
    username: reader
    password_file: pki/ua.password
    tags:
      - {name: LT1, node: "ns=2;s=Level"}
uplink:
  host: broker
  tls:
    ca_file: pki/ca.crt
    cert_file: pki/mqtt.crt
    key_file: pki/mqtt.key
  username: gw
  password_file: broker.password
  signing_key: signing.key
"""
SECRETS = {  # file -> (line of its key in CONFIG, key path, what the message calls it)
    "pki/client.key": (10, "devices[0].private_key", "OPC UA client key"),
    "pki/ua.password": (13, "devices[0].password_file", "OPC UA password file"),
    "pki/mqtt.key": (21, "uplink.tls.key_file", "MQTT client key"),
    "broker.password": (23, "uplink.password_file", "broker password file"),
    "signing.key": (24, "uplink.signing_key", "signing key"),
}


def gateway_dir(tmp_path: Path) -> Path:
    (tmp_path / "pki").mkdir()
    for name in SECRETS:
        path = tmp_path / name
        path.write_text("secret\n")
        path.chmod(0o600)
    (tmp_path / "gw.yaml").write_text(CONFIG)
    return tmp_path / "gw.yaml"


@pytest.mark.parametrize("mode, private", [(0o600, True), (0o400, True), (0o700, True), (0o640, False),
                                           (0o644, False), (0o604, False), (0o620, False), (0o610, False)])
def test_only_the_owner_may_have_any_permission(tmp_path: Path, mode: int, private: bool):
    path = tmp_path / "secret"
    path.write_text("pw")
    path.chmod(mode)
    problem = private_file_problem(path, "broker password file")
    if private:
        assert problem is None
        assert read_private(path, "broker password file") == b"pw"
    else:
        assert problem == (f"{path} (broker password file) has mode {mode:04o}: group and others must not read "
                           f"or write it; fix with: chmod 600 {path}")
        with pytest.raises(SecretFileError, match=f"mode {mode:04o}"):
            read_private(path, "broker password file")


def test_a_file_owned_by_another_account_is_refused_whatever_its_mode(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("pw")
    path.chmod(0o600)
    os.chown(path, FOREIGN_UID, -1)
    problem = private_file_problem(path, "OPC UA password file")
    assert problem is not None and problem.startswith(f"{path} (OPC UA password file) belongs to uid {FOREIGN_UID} "
                                                      "(no account): only root")
    assert "fix with: chown " in problem
    with pytest.raises(SecretFileError, match=f"uid {FOREIGN_UID}"):
        read_private(path, "OPC UA password file")
    os.chown(path, os.geteuid(), -1)
    assert private_file_problem(path, "OPC UA password file") is None


def test_the_signing_key_is_checked_the_same_way(tmp_path: Path):
    key = tmp_path / "signing.key"
    generate_key(key)
    assert load_private_key(key) is not None
    os.chown(key, FOREIGN_UID, -1)
    with pytest.raises(KeyFileError, match=f"belongs to uid {FOREIGN_UID}"):
        load_private_key(key)


def test_a_missing_file_has_nothing_to_leak(tmp_path: Path):
    assert private_file_problem(tmp_path / "absent", "signing key") is None
    with pytest.raises(SecretFileError, match="cannot read signing key"):
        read_private(tmp_path / "absent", "signing key")


def test_private_secret_files_pass_check_config(tmp_path: Path):
    config = load_config(gateway_dir(tmp_path))
    assert config.devices[0].settings.password_file == tmp_path / "pki/ua.password"


@pytest.mark.parametrize("name", list(SECRETS))
@pytest.mark.parametrize("loosen", ["chmod 640", "chmod 644", "chown"])
def test_check_config_names_the_line_the_file_its_mode_and_the_fix(tmp_path: Path, name: str, loosen: str):
    config_path = gateway_dir(tmp_path)
    secret = tmp_path / name
    if loosen == "chown":
        os.chown(secret, FOREIGN_UID, -1)
    else:
        secret.chmod(int(loosen.split()[1], 8))
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    line, key, what = SECRETS[name]
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (line, key)
    fix = f"chmod 600 {secret}" if loosen != "chown" else "chown "
    assert str(secret) in issue.message and what in issue.message and fix in issue.message
    if loosen != "chown":
        assert f"mode 0{loosen.split()[1]}" in issue.message


def test_start_refuses_files_loosened_after_the_check(tmp_path: Path):
    """check-config passed (or the compiled config came from the cache); then a file was loosened."""
    config = load_config(gateway_dir(tmp_path))
    refuse_loose(secret_files(config, resolve_uplink(config.uplink)))
    (tmp_path / "pki/ua.password").chmod(0o644)
    (tmp_path / "signing.key").chmod(0o640)
    with pytest.raises(SecretFileError) as caught:
        refuse_loose(secret_files(config, resolve_uplink(config.uplink)))
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{tmp_path / 'signing.key'} (signing key) has mode 0640: group and others must not read or write it; "
        f"fix with: chmod 600 {tmp_path / 'signing.key'}",
        f"{tmp_path / 'pki/ua.password'} (OPC UA password file of device ua) has mode 0644: group and others must "
        f"not read or write it; fix with: chmod 600 {tmp_path / 'pki/ua.password'}",
    ]
