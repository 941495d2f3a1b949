"""The gateway's Ed25519 signing key: create it safely, load it only if it is private.

The private key signs every batch, so whoever can read it can forge plant data. It is created
0600 in one system call (no window where another user could open it) and refused at load time
if group or others can read or write it or another account owns it (`gatewayd.secretfiles`, the
check every secret file of the config gets).

    pub_path = generate_key(Path("/etc/gatewayd/signing.key"))   # also writes signing.key.pub
    key = load_private_key(Path("/etc/gatewayd/signing.key"))
    log.info("signing key %s", public_key_fingerprint(key.public_key()))   # 16 hex digits
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewayd.secretfiles import SecretFileError, read_private


class KeyFileError(SecretFileError):
    """A key file is missing, unreadable, not an Ed25519 key, or not private enough."""


def public_path(path: Path) -> Path:
    """Where the public key of private key `path` lives: the same name plus `.pub`."""
    return path.with_name(path.name + ".pub")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits a public key should have
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key(path: Path) -> Path:
    """Create a new private key at `path` (PKCS8 PEM, 0600) and its public key; return the latter.

    Refuses when either file exists, so an existing identity is never replaced by accident.
    """
    path = Path(path)
    pub = public_path(path)
    if pub.exists():
        raise KeyFileError(f"{pub} already exists; remove it (and {path}) to make a new key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(path, private_pem, 0o600)
    _write_new(pub, public_pem, 0o644)
    return pub


def next_key_path(path: Path) -> Path:
    """Where `gatewayd keygen --rotate` puts the key that will replace private key `path`."""
    return path.with_name(path.name + ".next")


def load_next_key(path: Path) -> Ed25519PrivateKey | None:
    """The next key of a rotation under way (docs/operations.md#key-rotation), or None when there is none."""
    upcoming = next_key_path(Path(path))
    return load_private_key(upcoming) if upcoming.exists() else None


def finish_rotation(path: Path) -> None:
    """The next key takes the place of the current one, private key first; the old one is gone."""
    path, upcoming = Path(path), next_key_path(Path(path))
    os.replace(upcoming, path)
    os.replace(public_path(upcoming), public_path(path))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, refusing a file that group or others can read or write, or another account owns."""
    path = Path(path)
    try:
        data = read_private(path, "signing key")
    except SecretFileError as exc:
        raise KeyFileError(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM SubjectPublicKeyInfo Ed25519 public key (what generate_key wrote as .pub)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key: safe to log and compare."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
