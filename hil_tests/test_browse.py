"""`gatewayd browse` as a real command against the asyncua simulator: the address space with data types
and namespace-URI node ids, and YAML for chosen nodes that the real `gatewayd check-config` accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hil_tests.harness import plant_config
from hil_tests.sim.opcua_server import make_certificate
from hil_tests.simprocess import ROOT, SimProcess

NAMESPACE = "urn:gatewayd:sim"


def gatewayd(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewayd", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def server(sim_processes) -> SimProcess:
    return sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "2"], "OPC UA simulator"))


def test_the_listing_shows_the_simulators_variables_with_their_types(server):
    result = gatewayd("browse", f"opc.tcp://127.0.0.1:{server.port}", "--depth", "2")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["LT101"] == [f"nsu={NAMESPACE};s=LT101", "Double", "read"]
    assert rows["GEN00001"] == [f"nsu={NAMESPACE};s=GEN00001", "Double", "read"]
    assert rows["TEXT"] == [f"nsu={NAMESPACE};s=TEXT", "String", "read"]
    assert rows["Plant"] == [f"nsu={NAMESPACE};i=1", "(Object)"]
    assert "ServerStatus" not in rows  # the server's own diagnostics are left out below Objects
    below = gatewayd("browse", f"opc.tcp://127.0.0.1:{server.port}", "--node", f"nsu={NAMESPACE};i=1", "--depth", "1")
    assert below.returncode == 0 and below.stdout.splitlines()[0].split()[:3] == \
        ["LT101", f"nsu={NAMESPACE};s=LT101", "Double"]


def test_yaml_for_chosen_nodes_passes_check_config(server, tmp_path: Path):
    written = tmp_path / "ua.yaml"
    result = gatewayd("browse", f"opc.tcp://127.0.0.1:{server.port}", "--yaml", "LT201=ns=2;s=LT101",
                      "--yaml", f"GEN1=nsu={NAMESPACE};s=GEN00001", "--device", "dcs", "-o", str(written))
    assert result.returncode == 0, result.stderr
    (device,) = yaml.safe_load(written.read_text())["devices"]
    assert device["security_policy"] == "None" and device["endpoint"] == f"opc.tcp://127.0.0.1:{server.port}"
    assert [(tag["name"], tag["node"]) for tag in device["tags"]] == \
        [("LT201", f"nsu={NAMESPACE};s=LT101"), ("GEN1", f"nsu={NAMESPACE};s=GEN00001")]
    config = plant_config(tmp_path, plc_port=1502, broker_port=1883, tags=3, extra_devices=[device])
    checked = gatewayd("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "2 devices, 5 tags" in checked.stdout


def test_a_missing_or_text_node_is_named_and_nothing_is_written(server, tmp_path: Path):
    written = tmp_path / "ua.yaml"
    result = gatewayd("browse", f"opc.tcp://127.0.0.1:{server.port}", "--yaml", "A=ns=2;s=NOPE",
                      "--yaml", "B=ns=2;s=TEXT", "--yaml", "C=ns=2;s=LT101", "-o", str(written))
    assert result.returncode == 1 and not written.exists()
    assert "A=ns=2;s=NOPE: " in result.stderr and "(BadNodeIdUnknown)" in result.stderr
    assert "B=ns=2;s=TEXT: a String; a tag reads a number or a boolean" in result.stderr
    assert "C=" not in result.stderr


def test_no_server_and_a_password_without_security_are_refused(tmp_path: Path):
    silent = gatewayd("browse", "opc.tcp://127.0.0.1:1")
    assert silent.returncode == 1 and "cannot open a session with opc.tcp://127.0.0.1:1" in silent.stderr
    password = tmp_path / "password"
    password.write_text("secret\n")
    password.chmod(0o600)
    plain = gatewayd("browse", "opc.tcp://127.0.0.1:1", "--user", "op", "--password-file", str(password))
    assert plain.returncode == 1
    assert "--password-file need --security Basic256Sha256" in plain.stderr


def pki(tmp_path: Path, trust_server: bool) -> tuple[Path, list[str]]:
    """The server's certificate directory, and browse's security options with a trust store that holds the
    server's certificate, or another server's."""
    server_dir = tmp_path / "server-pki"
    make_certificate(server_dir, "server", "urn:gatewayd:sim:opcua")
    certificate, key = make_certificate(tmp_path / "client-pki", "client", "urn:gatewayd:test:client")
    trust = tmp_path / "trusted"
    trust.mkdir()
    trusted = server_dir / "server.der" if trust_server else \
        make_certificate(tmp_path / "other-pki", "other", "urn:elsewhere")[0]
    shutil.copy(trusted, trust / "trusted.der")
    password = tmp_path / "password"
    password.write_text("the-right-one\n")
    password.chmod(0o600)
    return server_dir, ["--security", "Basic256Sha256", "--certificate", str(certificate), "--private-key", str(key),
                        "--trust-store", str(trust), "--user", "operator", "--password-file", str(password)]


def test_a_secured_session_with_a_password_browses_and_its_yaml_keeps_the_security(sim_processes, tmp_path: Path):
    server_dir, security = pki(tmp_path, trust_server=True)
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], [
        "--vars", "1", "--security-dir", str(server_dir), "--user", "operator:the-right-one"], "OPC UA simulator"))
    url = f"opc.tcp://127.0.0.1:{server.port}"
    listing = gatewayd("browse", url, "--depth", "2", *security)
    assert listing.returncode == 0, listing.stderr
    assert f"nsu={NAMESPACE};s=GEN00000  Double  read" in listing.stdout
    written = tmp_path / "ua.yaml"
    chosen = gatewayd("browse", url, "--yaml", "G0=ns=2;s=GEN00000", "-o", str(written), *security)
    assert chosen.returncode == 0, chosen.stderr
    (device,) = yaml.safe_load(written.read_text())["devices"]
    assert (device["security_policy"], device["security_mode"], device["username"]) == \
        ("Basic256Sha256", "SignAndEncrypt", "operator")
    checked = gatewayd("check-config", str(plant_config(tmp_path, plc_port=1502, broker_port=1883, tags=1,
                                                        extra_devices=[device])))
    assert checked.returncode == 0, checked.stderr


def test_a_server_certificate_outside_the_trust_store_is_refused_before_any_password(sim_processes, tmp_path: Path):
    server_dir, security = pki(tmp_path, trust_server=False)
    server = sim_processes(SimProcess(["hil_tests.sim.opcua_server"], ["--vars", "1", "--security-dir",
                                                                       str(server_dir)], "OPC UA simulator"))
    refused = gatewayd("browse", f"opc.tcp://127.0.0.1:{server.port}", *security)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("gatewayd browse: ") and "trust" in refused.stderr, refused.stderr
