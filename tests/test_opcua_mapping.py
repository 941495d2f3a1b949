"""OPC UA status codes and variants to quality codes, and the trust store's decisions, as tables."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from asyncua.ua import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from drivers.opcua.status import quality_of, status_name
from drivers.opcua.trust import TrustStoreError, UntrustedServer, check_server_certificate, load_trust_store
from drivers.values import describe, to_float, unix_seconds
from core.types import Quality


@pytest.mark.parametrize("name, quality", [
    ("Good", Quality.GOOD), ("GoodLocalOverride", Quality.GOOD),
    ("Uncertain", Quality.UNCERTAIN), ("UncertainLastUsableValue", Quality.UNCERTAIN),
    ("UncertainEngineeringUnitsExceeded", Quality.UNCERTAIN),
    ("BadCommunicationError", Quality.COMM_FAILURE), ("BadNotConnected", Quality.COMM_FAILURE),
    ("BadTimeout", Quality.COMM_FAILURE), ("BadNoCommunication", Quality.COMM_FAILURE),
    ("BadServerNotConnected", Quality.COMM_FAILURE), ("BadShutdown", Quality.COMM_FAILURE),
    ("BadSensorFailure", Quality.SENSOR_FAULT), ("BadOutOfService", Quality.MAINTENANCE),
    ("BadConfigurationError", Quality.DEVICE_ERROR), ("BadNodeIdUnknown", Quality.DEVICE_ERROR),
    ("BadDeviceFailure", Quality.DEVICE_ERROR), ("BadUserAccessDenied", Quality.DEVICE_ERROR),
    ("BadOutOfRange", Quality.OUT_OF_RANGE), ("BadWaitingForInitialData", Quality.NO_VALUE),
])
def test_status_codes(name, quality):
    assert quality_of(getattr(StatusCodes, name)) == quality


def test_flag_bits_do_not_change_the_meaning():
    overflow_and_limit_high = 0x0000_0480
    assert quality_of(StatusCodes.BadSensorFailure | overflow_and_limit_high) == Quality.SENSOR_FAULT
    assert quality_of(StatusCodes.Good | 0x0000_0100) == Quality.GOOD
    assert status_name(StatusCodes.BadSensorFailure | 0x1) == "BadSensorFailure (0x808C0001)"
    assert quality_of(0xC000_0000) == Quality.DEVICE_ERROR  # reserved severity counts as bad


@pytest.mark.parametrize("value, expected", [
    (True, (1.0, Quality.GOOD)), (False, (0.0, Quality.GOOD)), (7, (7.0, Quality.GOOD)), (-2.5, (-2.5, Quality.GOOD)),
    (2**64, (float(2**64), Quality.GOOD)), (10**400, (math.nan, Quality.OUT_OF_RANGE)),
    (math.nan, (math.nan, Quality.OUT_OF_RANGE)), (math.inf, (math.nan, Quality.OUT_OF_RANGE)),
    ("12.5", (math.nan, Quality.DECODE_ERROR)), (b"\x00", (math.nan, Quality.DECODE_ERROR)),
    (None, (math.nan, Quality.DECODE_ERROR)), ([1.0, 2.0], (math.nan, Quality.DECODE_ERROR)),
    ("x" * 10_000_000, (math.nan, Quality.DECODE_ERROR)),
])
def test_values_become_a_float_or_a_reason(value, expected):
    number, quality = to_float(value)
    assert quality == expected[1]
    assert (math.isnan(number) and math.isnan(expected[0])) or number == expected[0]


def test_descriptions_of_huge_values_stay_short():
    assert len(describe("x" * 10_000_000)) < 100


@pytest.mark.parametrize("moment, seconds", [
    (dt.datetime(2024, 3, 5, 10, 0, tzinfo=dt.UTC), 1709632800.0),
    (dt.datetime(2024, 3, 5, 10, 0), 1709632800.0),  # naive: UTC, as OPC sends it
    ("2024-03-05 10:00:00+00:00", 1709632800.0), ("2024-03-05T18:00:00+08:00", 1709632800.0),
    (1709632800, 1709632800.0),
])
def test_source_timestamps(moment, seconds):
    assert unix_seconds(moment) == seconds


@pytest.mark.parametrize("moment", ["03/05/24 10:00:00", None, math.inf, True, object()])
def test_unusable_timestamps_are_nan(moment):
    assert math.isnan(unix_seconds(moment))


def certificate(name: str, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None, ca: bool = False,
                days: int = 30, start_days: int = -1) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now + dt.timedelta(days=start_days)).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .sign(signing_key, hashes.SHA256()))
    return built, key


@pytest.fixture(scope="module")
def pki():
    ca = certificate("plant CA", ca=True)
    return {"ca": ca, "issued": certificate("server A", issuer=ca), "self": certificate("server B"),
            "stranger": certificate("server C"), "expired": certificate("server D", days=-1, start_days=-10),
            "not_ca": certificate("not a CA"), }


def test_trust_store_accepts_pinned_and_ca_issued_certificates_only(pki, tmp_path):
    store = tmp_path / "trusted"
    trusted = [pki["ca"][0], pki["self"][0]]
    check_server_certificate(pki["self"][0], trusted, store)
    check_server_certificate(pki["issued"][0], trusted, store)
    with pytest.raises(UntrustedServer, match=r"server certificate CN=server C \(SHA-256 [0-9a-f:]+\) is not in the "
                                              r"trust store .*trusted"):
        check_server_certificate(pki["stranger"][0], trusted, store)
    with pytest.raises(UntrustedServer, match="expired"):
        check_server_certificate(pki["expired"][0], [pki["expired"][0]], store)


def test_a_certificate_issued_by_a_non_ca_is_not_trusted(pki, tmp_path):
    fake = certificate("server E", issuer=pki["not_ca"])[0]
    with pytest.raises(UntrustedServer):
        check_server_certificate(fake, [pki["not_ca"][0]], tmp_path)


def test_trust_store_loading(pki, tmp_path: Path):
    from cryptography.hazmat.primitives.serialization import Encoding
    pem = pki["ca"][0].public_bytes(Encoding.PEM) + pki["self"][0].public_bytes(Encoding.PEM)
    (tmp_path / "both.pem").write_bytes(pem)
    (tmp_path / "one.der").write_bytes(pki["stranger"][0].public_bytes(Encoding.DER))
    (tmp_path / "README").write_text("copy server certificates here")
    assert len(load_trust_store(tmp_path)) == 3
    (tmp_path / "broken.der").write_bytes(b"garbage")
    with pytest.raises(TrustStoreError, match="broken.der is not a certificate"):
        load_trust_store(tmp_path)
    with pytest.raises(TrustStoreError, match="cannot read trust store"):
        load_trust_store(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrustStoreError, match="holds no certificate"):
        load_trust_store(empty)


def test_an_int64_beyond_2_to_the_53_is_delivered_rounded_with_one_warning(caplog):
    """A double holds every integer up to 2^53; beyond, the tag's value is the nearest double and the
    driver says so once per tag, not on every change."""
    import asyncio

    import numpy as np
    from asyncua import ua

    from drivers.opcua.client import OpcUaDriver
    from drivers.opcua.config import OpcUaNode, OpcUaSettings
    from hil_tests.recording import RecordingSink

    driver = OpcUaDriver("ua", OpcUaSettings("opc.tcp://127.0.0.1:4840"), 1.0, 1.0,
                         [OpcUaNode("ns=2;s=BIG"), OpcUaNode("ns=2;s=SMALL")], np.arange(2))
    sink = RecordingSink(2)
    driver._sink = sink

    async def feed() -> None:
        for raw in (2 ** 53 + 1, 2 ** 53 + 3):
            driver._add(0, ua.DataValue(ua.Variant(raw, ua.VariantType.Int64)), 0.0)
            driver._add(1, ua.DataValue(ua.Variant(2 ** 53, ua.VariantType.Int64)), 0.0)
            await asyncio.sleep(0)

    with caplog.at_level("DEBUG", logger="gatewayd.drivers.opcua"):
        asyncio.run(feed())
    assert sink.values[0] == float(2 ** 53 + 4) and sink.values[1] == float(2 ** 53)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ns=2;s=BIG" in warnings[0] and "2^53" in warnings[0], warnings
