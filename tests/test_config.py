"""Configuration: golden folders of good and broken files; every error names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import drivers

from gatewayd.config import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).parent / "configs"
BAD = sorted((CONFIGS / "bad").glob("*.yaml"))
ROOT = Path(__file__).resolve().parent.parent


def expectation(path: Path) -> tuple[int, str]:
    """The first line of each broken file says `# expect: LINE: message start`."""
    header = path.read_text().splitlines()[0]
    assert header.startswith("# expect: "), f"{path.name} lacks its expectation header"
    line, message = header.removeprefix("# expect: ").split(": ", 1)
    return int(line), message


@pytest.mark.parametrize("path", BAD, ids=[path.stem for path in BAD])
def test_broken_config_names_line_and_key(path: Path):
    line, message = expectation(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    rendered = [str(issue) for issue in caught.value.issues]
    assert any(text.startswith(f"{path}:{line}: {message}") for text in rendered), rendered


def test_good_config_compiles_to_frozen_objects():
    config = load_config(CONFIGS / "good" / "minimal.yaml")
    assert [tag.name for tag in config.tags] == ["LT101", "XV101_OPEN", "XV101_CLOSED"]
    level = config.tags[0]
    assert (level.range_low, level.range_high, level.unit) == (0.0, 10.0, "m")
    assert (level.alarms.hh, level.alarms.h, level.alarms.l, level.alarms.ll) == (9.5, 9.0, 1.0, 0.5)
    assert level.address.width == 2
    assert config.uplink.transport == "tls" and config.uplink.port == 8883
    assert config.uplink.client_id == "GW-MIN-01"
    assert config.uplink.topic("GW-MIN-01") == "gatewayd/GW-MIN-01/batch"


def test_data_quality_settings_are_off_unless_given(tmp_path: Path):
    source = (CONFIGS / "good" / "minimal.yaml").read_text()
    plain = parse_config(source, tmp_path / "c.yaml")
    assert plain.data_quality.interval == 3600.0
    assert (plain.tags[0].frozen_after, plain.tags[0].max_rate) == (None, None)
    given = parse_config(source.replace("        unit: m\n", "        unit: m\n        frozen_after: 2h\n"
                                        "        max_rate: 0.5\n") + "data_quality: {interval: 5m}\n",
                         tmp_path / "c.yaml")
    assert given.data_quality.interval == 300.0
    assert (given.tags[0].frozen_after, given.tags[0].max_rate) == (7200.0, 0.5)


def test_all_errors_are_reported_not_just_the_first(tmp_path: Path):
    source = (CONFIGS / "good" / "minimal.yaml").read_text()
    broken = source.replace("address: 0", "address: -1").replace("id: GW-MIN-01", "id: 'bad id!'")
    with pytest.raises(ConfigError) as caught:
        parse_config(broken, tmp_path / "c.yaml")
    paths = {issue.path for issue in caught.value.issues}
    assert {"gateway.id", "devices[0].tags[0].address"} <= paths


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("- just\n- a list\n", "expected a mapping"),
    ("gateway: {id: A}\ngateway: {id: B}\n", "appears twice"),
])
def test_degenerate_documents(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "c.yaml")
    assert message in str(caught.value)


@pytest.mark.parametrize("value, seconds", [("500ms", 0.5), ("2s", 2.0), ("1.5m", 90.0), ("2h", 7200.0), (3, 3.0)])
def test_durations(tmp_path: Path, value, seconds):
    source = (CONFIGS / "good" / "minimal.yaml").read_text().replace(
        "id: GW-MIN-01", f"id: GW-MIN-01\n  scan_interval: {value}")
    assert parse_config(source, tmp_path / "c.yaml").gateway.scan_interval == seconds


def test_check_config_command_exits_nonzero_and_prints_every_error():
    broken = str(CONFIGS / "bad" / "unknown_key.yaml")
    result = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", broken],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "unknown_key.yaml:10:" in result.stderr and "did you mean 'address'" in result.stderr
    assert "2 errors" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", str(CONFIGS / "good" / "minimal.yaml")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "3 tags" in ok.stdout


def test_isolated_load_returns_the_same_config_and_the_same_errors():
    from gatewayd.config import load_config_isolated

    assert load_config_isolated(CONFIGS / "good" / "minimal.yaml") == load_config(CONFIGS / "good" / "minimal.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config_isolated(CONFIGS / "bad" / "duplicate_tag.yaml")
    assert caught.value.issues[0].line == 11


def test_configuration_reference_matches_the_schemas():
    from gatewayd.config.reference import render

    doc = (ROOT / "docs" / "configuration.md").read_text()
    embedded = doc.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert embedded == render(), "regenerate with: python -m gatewayd.config.reference"


@pytest.mark.parametrize("doc, device, value, with_key", [
    ("configuration.md", 0, "5 sec", True),
    ("configuration.md", 0, -1, False),
    ("configuration.md", 0, 0, False),
    ("operations.md", 1, -1, True),
])
def test_the_duration_errors_the_docs_quote_are_what_the_code_prints(tmp_path: Path, doc: str, device: int, value,
                                                                     with_key: bool):
    source = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    source["devices"][device]["poll_interval"] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(source, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    key = f"devices[{device}].poll_interval"
    [issue] = [issue for issue in caught.value.issues if issue.path == key]
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    quoted = f"{key}: {issue.message}" if with_key else issue.message
    assert quoted in " ".join(text.split()), f"docs/{doc} should quote: {quoted}"


def test_every_key_is_documented():
    from gatewayd.config.reference import render

    assert "|  |" not in render(), "a key without a meaning in its Field(doc=...)"


def test_example_config_is_valid():
    config = load_config(ROOT / "config.example.yaml")
    assert config.gateway.id == "GW-DEMO-001"
    kinds = {device.driver for device in config.devices}
    assert kinds == set(drivers.DRIVERS), "the example shows one device of every driver kind"


def test_a_gateway_without_devices_is_valid(tmp_path: Path):
    source = "gateway: {id: GW-EMPTY}\ndevices: []\nuplink: {host: broker, signing_key: k}\n"
    config = parse_config(source, tmp_path / "c.yaml")
    assert config.devices == () and config.tags == ()


def test_check_config_refuses_the_unsafe_with_exit_1_and_passes_the_unusual_with_warnings(tmp_path: Path):
    refused = str(CONFIGS / "bad" / "rules_gas_on_delay_10min.yaml")
    result = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", refused],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "on_delay: an on-delay of 600 s" in result.stderr
    unusual = tmp_path / "unusual.yaml"
    unusual.write_text(Path(refused).read_text().replace("on_delay: 10m", "on_delay: 15s\n      deadband: 12"))
    result = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", str(unusual)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"warning: {unusual}:31: rules.gas[0].on_delay: an on-delay of 15 s is long" in result.stderr
    assert f"warning: {unusual}:32: rules.gas[0].deadband: a deadband of 12 is more than 50%" in result.stderr
    assert "2 warnings" in result.stderr and "OK" in result.stdout
    assert {issue.path for issue in load_config(unusual).warnings} == {"rules.gas[0].on_delay", "rules.gas[0].deadband"}


AT201 = """      - name: AT201
        address: 4
        type: float32
        unit: "%LEL"
        range: [0, 100]
"""
P1_P4 = """rules:
  priorities: {P1: critical, P2: high, P3: medium, P4: low}
  gas:
    - {tag: AT201, type: combustible, gas: methane, level1: 20, level2: 40}
  units: {U1: {max_bypassed: 1}}
  interlocks:
    - {id: SIS-1, unit: U1, bypass: XV101_OPEN, trip: "LT101 > 9.8", max_bypass: 1h}
"""


def test_priorities_without_medium_pass_check_config_and_the_daemons_engine_runs(tmp_path: Path):
    """Today check-config said OK and the daemon died at start with KeyError: 'medium'."""
    from gatewayd.values.points import PointTable
    from gatewayd.config.model import point_tags
    from gatewayd.values.scan import build_engine

    source = (CONFIGS / "good" / "minimal.yaml").read_text().replace("uplink:", AT201 + "uplink:") + P1_P4
    path = tmp_path / "p1p4.yaml"
    path.write_text(source)
    result = subprocess.run([sys.executable, "-m", "gatewayd", "check-config", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    config = load_config(path)
    table = PointTable(point_tags(config))
    engine = build_engine(config, table)
    table.write(table.rows_of(["LT101", "AT201", "XV101_OPEN"]), np.array([9.9, 45.0, 1.0]))
    events = engine.evaluate(table.value, table.quality, 1.0, 1_700_000_000.0)
    priorities = {e.data["alarm"]: e.data["priority"] for e in events if e.kind in ("alarm", "gas_alarm")}
    assert priorities["LT101.HH"] == "P3" and priorities["AT201.GAS2"] == "P1" and priorities["AT201.GAS1"] == "P2"
    bypass = {e.data["event"]: int(e.priority) for e in events if e.kind == "bypass"}
    assert bypass["started"] == 2 and bypass["trip_while_bypassed"] == 4  # P3 (medium), P1 (critical)


def test_control_roles_default_and_one_group_for_operators_and_approvers_is_a_warning(tmp_path: Path):
    source = (CONFIGS / "good" / "minimal.yaml").read_text()
    plain = parse_config(source, tmp_path / "c.yaml")
    assert (plain.control.view_group, plain.control.operator_group, plain.control.approver_group,
            plain.control.approval_window) == ("gatewayd-view", "gatewayd-operator", "gatewayd-approver", 3600.0)
    shared = parse_config(source + "control:\n  operator_group: ops\n  approver_group: ops\n  approval_window: 20m\n",
                          tmp_path / "c.yaml")
    assert (shared.control.operator_group, shared.control.approval_window) == ("ops", 1200.0)
    lines = len(source.splitlines())
    assert [str(warning) for warning in shared.warnings] == [
        f"{tmp_path / 'c.yaml'}:{lines + 3}: control.approver_group: operators and approvers are one group (ops): "
        "every operator may approve another operator's request; give approvers a group of their own"]
