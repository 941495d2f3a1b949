"""The unit and its companions as systemd reads them, and what the daemon takes from systemd.

systemd-analyze, systemd-sysusers and systemd-tmpfiles work offline (`--offline`, `--root`), so these
run on a build machine where systemd is not PID 1.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from gatewayd.config import ConfigError, load_config
from gatewayd.daemon import WATCHDOG_STALL, stalled_loops
from gatewayd.systemd import Credential, CredentialError, exec_directory, secret_path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "gatewayd.service"
EXAMPLE = ROOT / "systemd" / "gatewayd.example.yaml"
MAX_EXPOSURE = 2.0


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_security_exposure_is_at_most_2(tmp_path: Path):
    result = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT), cwd=tmp_path)
    found = re.search(r"Overall exposure level for gatewayd\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_verify_is_clean(tmp_path: Path):
    """`systemd-analyze verify` wants ExecStart= to exist: point it at a stand-in, as `make install` points
    it at PREFIX."""
    prefix = tmp_path / "opt" / "gatewayd"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "gatewayd").write_text("#!/bin/sh\n")
    (prefix / "bin" / "gatewayd").chmod(0o755)
    unit = tmp_path / "gatewayd.service"
    unit.write_text(UNIT.read_text().replace("/opt/gatewayd", str(prefix)))
    result = run("systemd-analyze", "verify", str(unit), cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_unit_is_a_watched_notify_service_that_restarts():
    settings = unit_settings(UNIT.read_text())
    for key, value in {"Type": "notify", "NotifyAccess": "main", "Restart": "always", "User": "gatewayd",
                       "SupplementaryGroups": "dialout", "ProtectSystem": "strict", "DevicePolicy": "closed",
                       "StateDirectory": "gatewayd", "CacheDirectory": "gatewayd", "RuntimeDirectory": "gatewayd",
                       "ConfigurationDirectory": "gatewayd", "RestartPreventExitStatus": "2"}.items():
        assert settings.get(key) == [value], key
    assert "WatchdogSec" in settings and "StartLimitBurst" in settings and "StartLimitIntervalSec" in settings
    assert {"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} <= set(settings["DeviceAllow"])
    assert "PrivateDevices" not in settings, "serial ports live in the host's /dev"


def test_the_example_config_uses_what_the_unit_provides():
    settings = unit_settings(UNIT.read_text())
    credential, _, source = settings["LoadCredential"][0].partition(":")
    assert source == "/etc/gatewayd/signing.key"
    config = load_config(EXAMPLE)
    assert config.uplink.signing_key == Credential(credential)
    assert settings["ExecStart"][0].endswith("run -c /etc/gatewayd/config.yaml")
    assert config.metrics is not None and config.metrics.host == "127.0.0.1"


def test_sysusers_and_tmpfiles_make_the_user_and_a_private_config_directory(tmp_path: Path):
    root = tmp_path / "root"
    (root / "etc" / "gatewayd").mkdir(parents=True)
    key = root / "etc" / "gatewayd" / "signing.key"
    key.write_text("key")
    key.chmod(0o644)  # loosened by hand: the next boot tightens it
    result = run("systemd-sysusers", f"--root={root}", str(ROOT / "systemd" / "gatewayd.sysusers"))
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert users["gatewayd"][6] == "/usr/sbin/nologin"
    assert "gatewayd" in groups["dialout"][3].split(",")
    assert [groups[name][3] for name in ("gatewayd-view", "gatewayd-operator", "gatewayd-approver")] == ["", "", ""], \
        "the role groups of control: exist, empty"
    result = run("systemd-tmpfiles", f"--root={root}", "--create", str(ROOT / "systemd" / "gatewayd.tmpfiles"))
    assert result.returncode == 0, result.stderr
    directory = (root / "etc" / "gatewayd").stat()
    assert stat.S_IMODE(directory.st_mode) == 0o750 and directory.st_gid == int(groups["gatewayd"][2])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def write_config(path: Path, uplink_extra: str = "", top_extra: str = "") -> Path:
    path.write_text(f"""\
gateway:
  id: GW-1
devices:
  - {{name: plc, driver: modbus_tcp, host: 127.0.0.1, tags: [{{name: T1, address: 0, type: int16}}]}}
uplink:
  host: broker.example
  signing_key: credential:signing.key
{uplink_extra}{top_extra}""")
    return path


def test_directories_come_from_systemd_unless_the_config_names_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'cache'}:{tmp_path / 'other'}")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = load_config(write_config(tmp_path / "c.yaml"))
    assert config.gateway.state_dir == tmp_path / "state"
    assert config.gateway.cache_dir == tmp_path / "cache", "the first of several directories"
    assert config.gateway.runtime_dir == Path("/run/gatewayd")
    assert config.store.path == tmp_path / "state" / "gatewayd.db"
    named = tmp_path / "named.yaml"
    named.write_text(write_config(tmp_path / "c.yaml").read_text().replace("  id: GW-1\n",
                                                                            "  id: GW-1\n  state_dir: mine\n"))
    assert load_config(named).gateway.state_dir == tmp_path / "mine"


def test_a_credential_is_found_only_where_systemd_put_it(tmp_path: Path, monkeypatch):
    config = load_config(write_config(tmp_path / "c.yaml"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialError, match="LoadCredential=signing.key:"):
        secret_path(config.uplink.signing_key)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(CredentialError, match="no .*signing.key"):
        secret_path(config.uplink.signing_key)
    (tmp_path / "signing.key").write_text("key")
    assert secret_path(config.uplink.signing_key) == tmp_path / "signing.key"
    assert secret_path(tmp_path / "plain.key") == tmp_path / "plain.key"


@pytest.mark.parametrize("uplink, top, line, message", [
    ("  password_file: credential:../etc/shadow\n  username: u\n", "", 8, "is not a credential name"),
    ("", "metrics:\n  listen: localhost\n", 9, "is not HOST:PORT"),
    ("", "metrics:\n  listen: 127.0.0.1:99999\n", 9, "is not HOST:PORT"),
    ("", "metrics:\n  port: 9108\n", 9, "unknown key 'port'"),
])
def test_bad_credential_and_metrics_keys_name_their_line(tmp_path: Path, uplink, top, line, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.yaml", uplink, top))
    issue = caught.value.issues[0]
    assert issue.line == line and message in issue.message, str(caught.value)


def test_metrics_listen_accepts_ipv6():
    from gatewayd.config.tables import listen_address

    assert listen_address("[::1]:9108") == ("::1", 9108)


def test_exec_directory_is_none_when_systemd_set_nothing(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert exec_directory("STATE_DIRECTORY") is None
    monkeypatch.setenv("STATE_DIRECTORY", "")
    assert exec_directory("STATE_DIRECTORY") is None


@pytest.mark.parametrize("scan_age, uplink_age, scan_period, stalled", [
    (1.0, 0.5, 1.0, []),
    (WATCHDOG_STALL + 1, 0.5, 1.0, ["scan"]),
    (0.5, WATCHDOG_STALL + 1, 1.0, ["uplink"]),
    (WATCHDOG_STALL + 1, WATCHDOG_STALL + 1, 1.0, ["scan", "uplink"]),
    (100.0, 0.5, 60.0, []),  # a slow scan loop is judged by its own period
    (181.0, 0.5, 60.0, ["scan"]),
])
def test_the_watchdog_is_withheld_only_for_loops_that_stopped_turning(scan_age, uplink_age, scan_period, stalled):
    now = 10_000.0
    loops = {"scan": (now - scan_age, scan_period), "uplink": (now - uplink_age, 1.0)}
    assert stalled_loops(now, loops) == stalled


def test_credentials_directory_file_mode_passes_the_key_check(tmp_path: Path, monkeypatch):
    """systemd makes credential files 0400 and owned by the service user: private enough for the loader."""
    from gatewayd.keys import generate_key, load_private_key

    generate_key(tmp_path / "signing.key")
    os.chmod(tmp_path / "signing.key", 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_private_key(secret_path(Credential("signing.key"))) is not None
