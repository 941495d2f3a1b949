"""Mutual TLS between the daemon and a real mosquitto, with a throwaway PKI made for each test.

mosquitto's TLS listener requires a client certificate from the test CA (`require_certificate true`,
TLS 1.2 at least); its plain loopback listener stands for the platform's side, where the receiver
subscribes. The daemon must deliver verified batches over mutual TLS, and must refuse a broker whose
certificate comes from another CA or names another host: it says why in its log, keeps retrying and
sends nothing. A daemon without a client certificate is refused by the broker.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant, committed
from hil_tests.harness import Broker, BrokerTls, Simulator, free_port, make_key, plant_config, stop_all
from hil_tests.test_end_to_end import wait_quiet

TAGS = 20


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


class Authority:
    """A throwaway certificate authority that issues server and client certificates (EC P-256)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        self.cert = directory / f"{name}.crt"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, hosts: tuple[str, ...] = (), client: bool = False) -> Issued:
        """A leaf certificate for `hosts` (DNS names or IP addresses), for a server or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names = [x509.IPAddress(ipaddress.ip_address(host)) if host[0].isdigit() else x509.DNSName(host)
                 for host in hosts]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.touch(mode=0o600)
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        return issued


@dataclass
class Pki:
    ca: Authority
    broker: Issued
    gateway: Issued
    platform: Issued
    stranger_broker: Issued  # signed by another CA
    misnamed_broker: Issued  # signed by the right CA, for another host


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = Authority(directory, "plant-ca"), Authority(directory / "other", "other-ca")
    return Pki(ca=ca, broker=ca.issue("broker", hosts=("localhost", "127.0.0.1")),
               gateway=ca.issue("gateway", client=True), platform=ca.issue("platform", client=True),
               stranger_broker=other.issue("broker", hosts=("localhost", "127.0.0.1")),
               misnamed_broker=ca.issue("misnamed", hosts=("broker.plant.invalid",)))


@pytest.fixture
def tls_plants(tmp_path: Path):
    """Each call: a broker with a TLS listener presenting `server`, a receiver on its plain listener, and a
    daemon config for the TLS listener; the PLC simulator and the signing key are shared."""
    plc = Simulator(tmp_path, TAGS, period=0.5).start()
    make_key(tmp_path)
    plants: list[Plant] = []

    def build(name: str, server: Issued, ca: Path, client: Issued | None) -> Plant:
        workdir = tmp_path / name
        workdir.mkdir()
        for key in ("signing.key", "signing.key.pub"):
            shutil.copy2(tmp_path / key, workdir / key)
        broker = Broker(workdir, tls=BrokerTls(free_port(), ca, server.cert, server.key)).start()
        receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                            session_expiry=3600)
        receiver.start()
        tls = {"ca_file": str(ca), **({"cert_file": str(client.cert), "key_file": str(client.key)} if client else {})}
        config = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.tls.port,
                              tags=TAGS, poll_interval=0.5, scan_interval=0.5,
                              uplink={"transport": "tls", "tls": tls})
        plants.append(Plant(workdir, broker, plc, receiver, config))
        return plants[-1]

    yield build
    for plant in plants:
        plant.receiver.stop()
        stop_all(*plant.daemons, plant.broker)
    stop_all(plc)


def test_mutual_tls_delivers_verified_batches(pki: Pki, tls_plants):
    plant = tls_plants("mutual", pki.broker, pki.ca.cert, pki.gateway)
    assert yaml.safe_load(plant.config.read_text())["uplink"]["transport"] == "tls"
    daemon = plant.start_daemon()
    # the platform may subscribe over mutual TLS as well
    platform = Receiver("127.0.0.1", plant.broker.tls.port, TOPIC, ca_file=pki.ca.cert, cert_file=pki.platform.cert,
                        key_file=pki.platform.key)
    platform.start()
    try:
        assert platform.wait_for(lambda frames: len(frames) >= 5, timeout=60), daemon.log_text()[-3000:]
    finally:
        platform.stop()
    assert daemon.stop() == 0
    wait_quiet(plant)
    samples, events = committed(daemon)
    report = plant.report()
    assert report.ok, report.format()
    assert samples > 0 and (report.samples, report.events) == (samples, events)
    assert plant.store_rows("SELECT count(*) FROM outbox") == [(0,)]


def refused(plant: Plant) -> str:
    """Check a daemon whose broker refused the link all along; stop it and return its log."""
    daemon = plant.daemons[-1]
    assert daemon.running, daemon.log_text()[-3000:]
    attempts = plant.broker.log_text().count(f"on port {plant.broker.tls.port}")
    assert attempts >= 2, f"the daemon keeps retrying: {attempts} connection attempts"
    assert plant.receiver.frames() == [], "nothing may be published over a refused link"
    assert daemon.stop() == 0
    assert plant.store_rows("SELECT count(*) FROM outbox")[0][0] > 0, "nothing acknowledged: every row kept"
    log = daemon.log_text()
    assert "Traceback" not in log
    return log


def test_a_broker_certificate_that_fails_verification_is_refused(pki: Pki, tls_plants):
    """Three refusals side by side, to save time: a broker certificate from another CA, one for another
    host name, and a daemon without a client certificate."""
    plants = {"stranger": tls_plants("stranger", pki.stranger_broker, pki.ca.cert, pki.gateway),
              "misnamed": tls_plants("misnamed", pki.misnamed_broker, pki.ca.cert, pki.gateway),
              "anonymous": tls_plants("anonymous", pki.broker, pki.ca.cert, None)}
    for plant in plants.values():
        plant.start_daemon()
    time.sleep(10)  # start-up, the first attempt and at least one retry (paho waits 1 s, then 2 s, ...)
    logs = {name: refused(plant) for name, plant in plants.items()}
    assert "TLS: the broker's certificate failed verification: unable to get local issuer certificate" \
        in logs["stranger"], logs["stranger"][-2000:]
    assert "TLS: the broker's certificate failed verification: IP address mismatch, certificate is not valid " \
           "for '127.0.0.1'" in logs["misnamed"], logs["misnamed"][-2000:]
    anonymous = logs["anonymous"]
    assert "TLSV13_ALERT_CERTIFICATE_REQUIRED" in anonymous and "requires a client certificate" in anonymous, \
        anonymous[-2000:]
    assert "peer did not return a certificate" in plants["anonymous"].broker.log_text()
    for log in logs.values():
        failures = [line for line in log.splitlines() if "cannot connect to broker" in line]
        assert len(failures) == 1, "the first failure is logged, repeats go to debug:\n" + "\n".join(failures)
