"""The signing key is created private, never overwritten, and refused when readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gatewayd.keys import (
    KeyFileError,
    generate_key,
    load_private_key,
    load_public_key,
    public_key_fingerprint,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_private_0600_and_public_0644(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # a strict umask must not make the public key unreadable
    try:
        pub = generate_key(tmp_path / "signing.key")
    finally:
        os.umask(old_umask)
    assert pub == tmp_path / "signing.key.pub"
    assert mode(tmp_path / "signing.key") == 0o600
    assert mode(pub) == 0o644
    assert (tmp_path / "signing.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_sign_with_private_verify_with_public(tmp_path: Path) -> None:
    pub = generate_key(tmp_path / "k")
    private = load_private_key(tmp_path / "k")
    public = load_public_key(pub)
    signature = private.sign(b"batch")
    public.verify(signature, b"batch")  # raises InvalidSignature on mismatch
    assert public_key_fingerprint(public) == public_key_fingerprint(private.public_key())
    assert len(public_key_fingerprint(public)) == 16


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key(key)
    before = key.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key(key)
    assert key.read_bytes() == before


def test_refuses_when_only_public_key_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("stale")
    with pytest.raises(KeyFileError, match="k.pub already exists"):
        generate_key(tmp_path / "k")
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o660, 0o602])
def test_refuses_key_readable_or_writable_by_others(tmp_path: Path, loose: int) -> None:
    key = tmp_path / "k"
    generate_key(key)
    key.chmod(loose)
    with pytest.raises(KeyFileError) as info:
        load_private_key(key)
    message = str(info.value)
    assert str(key) in message and f"{loose:04o}" in message and f"chmod 600 {key}" in message


def test_missing_and_wrong_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="missing.key"):
        load_private_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(KeyFileError, match="junk.pub is not a PEM public key"):
        load_public_key(junk)
