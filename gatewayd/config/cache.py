"""The compiled-config cache: a validated `Config`, pickled, so that a restart skips parsing the YAML.

Why: parsing and validating a 100,000-alarm plant takes seconds of pure Python, and a daemon restarted
with an unchanged file would pay them again on every start. The forked child that parses
(`gatewayd.config.load.load_config_isolated`) already hands its result back as a pickle; this module
keeps that pickle on disk.

Why it can be trusted:
- An entry is keyed by everything the parse depends on: the SHA-256 of the file's bytes, the file's
  resolved path (relative paths in it are resolved against its directory), the systemd directory
  variables that supply default directories, the gatewayd version, the Python version, the
  digest of the core, gatewayd, rules and drivers sources and of installed packages that register
  driver kinds (a development tree keeps its version across edits), and the path and SHA-256 of
  every other file the parse read (a GDS `profile_file`, a shipped profile: `Config.sources`). The
  entry lists those files; a read digests them again, so
  editing one is a miss like editing the main file, and the file is parsed and checked in full again.
- Header, file list and payload carry their own SHA-256: a truncated or damaged file is detected,
  logged as a warning and ignored, never half-read.
- Unpickling runs code named in the file, so an entry is only read if this user owns it and nobody
  else may write it (gatewayd.trust); entries are written 0600 and replaced atomically.
- Only configs that passed every check are stored; a bad file is parsed, and refused, every time.

Where it lives must be known before parsing, so it is not `gateway.cache_dir` from the file but
`$CACHE_DIRECTORY/config` (systemd sets it from the unit's CacheDirectory=), else
/var/cache/gatewayd/config. The cache root itself is never created here: without it (a hand-run
daemon, a test) there is simply no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import gatewayd
from drivers import plugins
from core.yamlload import SourceFile
from gatewayd.systemd import exec_directory
from gatewayd.trust import written_by_others

log = logging.getLogger("gatewayd.config")

MAGIC = b"gatewayd compiled config 2\n"  # then key, SHA-256 of the rest, file list length, file list, payload
DIGEST_SIZE = 32
LENGTH = struct.Struct(">I")
DEFAULT_ROOT = Path("/var/cache/gatewayd")
ENVIRONMENT = ("STATE_DIRECTORY", "CACHE_DIRECTORY", "RUNTIME_DIRECTORY")  # read by the parse
SOURCE_PACKAGES = ("core", "gatewayd", "rules", "drivers")  # the code that turns YAML into a Config


def cache_root() -> Path:
    return exec_directory("CACHE_DIRECTORY") or DEFAULT_ROOT


def code_digest() -> bytes:
    """SHA-256 over the Python sources of the packages that build a Config (a few milliseconds), and of
    the installed packages that register driver kinds (`drivers.plugins`)."""
    digest = hashlib.sha256()
    base = Path(gatewayd.__file__).resolve().parent.parent
    for package in SOURCE_PACKAGES:
        for source in sorted((base / package).rglob("*.py")):
            digest.update(str(source.relative_to(base)).encode() + b"\0" + source.read_bytes() + b"\0")
    for name, data in plugins.package_sources():
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.digest()


class ConfigCache:
    """The cache entry of one config file with the bytes it was read as."""

    def __init__(self, config_file: Path, source: bytes, root: Path | None = None):
        resolved = Path(config_file).resolve()
        self.root = cache_root() if root is None else root
        self.path = self.root / "config" / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.pickle"
        key = hashlib.sha256()
        for part in (gatewayd.__version__, sys.version, str(resolved),
                     *(f"{name}={os.environ.get(name, '')}" for name in ENVIRONMENT)):
            key.update(part.encode() + b"\0")
        key.update(code_digest())
        key.update(hashlib.sha256(source).digest())
        self.main_key = key.digest()

    def key(self, included: Sequence[SourceFile]) -> bytes:
        """The full key: the main file's with the path and digest of each other file the parse read."""
        key = hashlib.sha256(self.main_key)
        for source in included:
            key.update(f"{source.path}\0{source.sha256}\0".encode())
        return key.digest()

    def read(self) -> bytes | None:
        """The pickled Config stored for exactly this key, or None (absent, stale, unsafe or damaged)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("compiled config cache %s unreadable (%s); parsing the YAML", self.path, exc)
            return None
        with open(fd, "rb") as file:
            reason = written_by_others(os.fstat(file.fileno()), (os.geteuid(),))
            if reason is not None:
                log.warning("compiled config cache %s ignored: %s, expected uid %d and writable by nobody else; "
                            "parsing the YAML", self.path, reason, os.geteuid())
                return None
            data = file.read()
        header = len(MAGIC) + 2 * DIGEST_SIZE
        if len(data) < header + LENGTH.size or not data.startswith(MAGIC):
            log.warning("compiled config cache %s is damaged (no valid header); parsing the YAML", self.path)
            return None
        body = data[header:]
        if hashlib.sha256(body).digest() != data[len(MAGIC) + DIGEST_SIZE:header]:
            log.warning("compiled config cache %s is damaged (checksum mismatch); parsing the YAML", self.path)
            return None
        (listed,) = LENGTH.unpack_from(body)
        included = self._digest_again(json.loads(body[LENGTH.size:LENGTH.size + listed]))
        if included is None or self.key(included) != data[len(MAGIC):len(MAGIC) + DIGEST_SIZE]:
            log.info("compiled config cache %s is for another file, version or environment, or a file the "
                     "config includes changed; parsing the YAML", self.path)
            return None
        return body[LENGTH.size + listed:]

    def _digest_again(self, paths: list[str]) -> list[SourceFile] | None:
        """The files an entry lists with their digests now; None when one is gone or unreadable."""
        try:
            return [SourceFile(Path(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()) for path in paths]
        except OSError as exc:
            log.info("compiled config cache %s: a file the config includes is unreadable (%s); parsing the YAML",
                     self.path, exc)
            return None

    def write(self, payload: bytes, sources: Sequence[SourceFile]) -> None:
        """Store a pickled Config parsed from `sources` (the main file first) atomically, mode 0600; a
        failure only costs the next start a parse."""
        if not self.root.is_dir():
            log.debug("no compiled config cache: %s does not exist", self.root)
            return
        included = sources[1:]
        listed = json.dumps([str(source.path) for source in included]).encode()
        body = LENGTH.pack(len(listed)) + listed + payload
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as file:
                file.write(MAGIC + self.key(included) + hashlib.sha256(body).digest())
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("compiled config cache %s not written (%s); the next start parses the YAML again",
                        self.path, exc)
            temporary.unlink(missing_ok=True)
