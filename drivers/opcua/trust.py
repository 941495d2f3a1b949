"""The trust store: which OPC UA server certificates the driver accepts. Nothing else is trusted.

A directory of certificates (PEM, possibly several per file, or DER) that the integrator put there.
A server certificate is trusted when it is one of them (the usual case: the server's self-signed
application certificate, copied from the server), or when it is directly issued by one of them that
is a CA. Expired or not yet valid certificates are refused either way. asyncua's own validator is
not used: it accepts untrusted certificates by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, UTC
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes


class UntrustedServer(Exception):
    """The server presented a certificate that the trust store does not vouch for."""


class TrustStoreError(Exception):
    """The trust store directory cannot be read or holds no certificate."""


def load_trust_store(directory: Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in the files of `directory` (not recursive); unreadable files are an error."""
    try:
        files = sorted(path for path in directory.iterdir() if path.is_file())
    except OSError as exc:
        raise TrustStoreError(f"cannot read trust store {directory}: {exc.strerror or exc}") from exc
    certificates: list[x509.Certificate] = []
    for path in files:
        data = path.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                certificates += x509.load_pem_x509_certificates(data)
            elif path.suffix.lower() in (".der", ".cer", ".crt"):
                certificates.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise TrustStoreError(f"trust store file {path} is not a certificate: {exc}") from exc
    if not certificates:
        raise TrustStoreError(f"trust store {directory} holds no certificate (.pem, .der, .crt or .cer)")
    return tuple(certificates)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":")


def check_server_certificate(certificate: x509.Certificate, trusted: Sequence[x509.Certificate],
                             store: Path, now: datetime | None = None) -> None:
    """Return if `certificate` is trusted; raise UntrustedServer naming the certificate and why not."""
    now = now or datetime.now(UTC)
    subject = certificate.subject.rfc4514_string() or "(no subject)"
    if certificate.not_valid_after_utc < now:
        raise UntrustedServer(f"server certificate {subject} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
    if certificate.not_valid_before_utc > now:
        raise UntrustedServer(f"server certificate {subject} is not valid before "
                              f"{certificate.not_valid_before_utc:%Y-%m-%d}")
    if any(certificate == candidate for candidate in trusted):
        return
    for candidate in trusted:
        if _is_ca(candidate) and candidate.subject == certificate.issuer:
            try:
                certificate.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return
    raise UntrustedServer(
        f"server certificate {subject} (SHA-256 {fingerprint(certificate)}) is not in the trust store {store} "
        "and not issued by a CA in it; if this is the right server, copy its certificate into the trust store")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
