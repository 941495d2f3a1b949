"""What systemd gives the service, without systemd-python: sd_notify, the watchdog, directories, credentials.

sd_notify is one datagram to $NOTIFY_SOCKET per state change or watchdog ping. The unit's
StateDirectory=, CacheDirectory= and RuntimeDirectory= arrive as $STATE_DIRECTORY and friends, and
LoadCredential= secrets as files in $CREDENTIALS_DIRECTORY, readable by the service alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credential:
    """A secret that systemd hands the service (`LoadCredential=NAME:...`), written `credential:NAME`.

    It lives in $CREDENTIALS_DIRECTORY only while the service runs, so it is resolved at start
    (`secret_path`), not when the file is checked. It is defined here, not beside the config model that
    holds it, so that this module imports nothing of the project: the config loader imports it back.
    """

    name: str

    def __str__(self) -> str:
        return f"credential:{self.name}"


class CredentialError(Exception):
    """A `credential:NAME` secret is not there: not run by systemd, or no LoadCredential=NAME:... line."""


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "WATCHDOG=1"; False when not run by systemd (no socket in the environment)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None when systemd does not watch us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def exec_directory(variable: str) -> Path | None:
    """The first directory of $STATE_DIRECTORY, $CACHE_DIRECTORY, ... (colon-separated), or None if unset."""
    value = os.environ.get(variable, "")
    first = value.split(":", 1)[0]
    return Path(first) if first else None


def secret_path(source: Path | Credential) -> Path:
    """The file that holds a secret: the path itself, or $CREDENTIALS_DIRECTORY/NAME for a credential."""
    if not isinstance(source, Credential):
        return source
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialError(
            f"{source} needs systemd: $CREDENTIALS_DIRECTORY is not set. Run the service with "
            f"LoadCredential={source.name}:/etc/gatewayd/{source.name} in its unit, or give a file path instead")
    path = Path(directory) / source.name
    if not path.exists():
        raise CredentialError(f"{source}: no {path}; the unit needs LoadCredential={source.name}:FILE")
    return path
