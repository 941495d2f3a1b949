"""Files that hold secrets (private keys, passwords): used only when nobody but the daemon can read them.

Whoever can read the signing key can forge plant data; whoever can read a broker or OPC UA password
or a client key can pose as the gateway. Such a file is refused, the way ssh refuses a loose
identity file, when group or others may read or write it, or when it belongs to an account other
than root, the account checking it, or the service account (`gatewayd`, which owns what the daemon
reads): another owner could swap the secret under the daemon. check-config reports a loose file at
its config line, and start and reload refuse it again (modes change after a check).

    data = read_private(Path("/etc/gatewayd/signing.key"), "signing key")   # SecretFileError if loose
    problem = private_file_problem(path, "OPC UA password file")              # None when private
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

SERVICE_ACCOUNT = "gatewayd"  # systemd/gatewayd.sysusers


class SecretFileError(Exception):
    """A secret file is unreadable or readable by more than the daemon's account."""


def _account_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no account"


def allowed_owners() -> set[int]:
    """root, the account running this process, and the service account if the system has one."""
    owners = {0, os.geteuid()}
    service = _account_uid(SERVICE_ACCOUNT)
    if service is not None:
        owners.add(service)
    return owners


def problem_of(info: os.stat_result, path: Path, what: str) -> str | None:
    """Why a file with this status may not hold a secret, or None; the message says what to run."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return (f"{path} ({what}) has mode {mode:04o}: group and others must not read or write it; "
                f"fix with: chmod 600 {path}")
    owners = allowed_owners()
    if info.st_uid not in owners:
        account = SERVICE_ACCOUNT if _account_uid(SERVICE_ACCOUNT) is not None else _account_name(os.geteuid())
        names = ", ".join(sorted({_account_name(uid) for uid in owners}))
        return (f"{path} ({what}) belongs to uid {info.st_uid} ({_account_name(info.st_uid)}): only {names} "
                f"may own it; fix with: chown {account} {path}")
    return None


def private_file_problem(path: Path, what: str) -> str | None:
    """`problem_of` the file at `path`; a missing file has nothing to leak (its reader reports it missing)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot check {what} {path}: {exc.strerror}"
    return problem_of(info, path, what)


def refuse_loose(files: Iterable[tuple[str, Path | None]]) -> None:
    """Raise one SecretFileError naming every loose file of (what, path) pairs; None paths are skipped."""
    problems = [problem for what, path in files
                if path is not None and (problem := private_file_problem(path, what)) is not None]
    if problems:
        raise SecretFileError("\n".join(problems))


def read_private(path: Path, what: str) -> bytes:
    """The bytes of a secret file, checked on the open file itself (no window to swap it after the check)."""
    try:
        with open(path, "rb") as fh:
            problem = problem_of(os.fstat(fh.fileno()), path, what)
            if problem is not None:
                raise SecretFileError(problem)
            return fh.read()
    except OSError as exc:
        raise SecretFileError(f"cannot read {what} {path}: {exc.strerror}") from None
