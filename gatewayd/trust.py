"""Whether what lies on disk can have been written by another account: the checks every cache shares.

Why: the compiled-config cache and numba's kernel cache are unpickled, and unpickling runs code named
in the file. Such a file is only read when nobody but the daemon's own account could have written it,
nor swapped it, nor any directory on the way to it. A failed check names the file and the reason, so
the caller can log one line and do without the cache.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def written_by_others(info: os.stat_result, owners: Collection[int]) -> str | None:
    """Why a file with this status may hold what another account wrote (owner, mode), or None."""
    if info.st_uid not in owners:
        return f"owned by uid {info.st_uid}"
    if info.st_mode & OTHERS_WRITE:
        return f"writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def untrusted_path(directory: Path) -> str | None:
    """Why another account could change what `directory` leads to, or None.

    Every component from the directory up to / must belong to this account or root and be writable by
    nobody else. A root-owned directory with the sticky bit (such as /tmp) is accepted above the
    directory itself: nobody may rename or remove what another account owns in it. The path is
    resolved first; callers use the resolved path, so no symbolic link is followed later.
    """
    owners = {os.geteuid(), 0}
    path = Path(directory).resolve()
    for component in (path, *path.parents):
        info = os.lstat(component)
        reason = written_by_others(info, owners)
        sticky_root = component != path and info.st_uid == 0 and info.st_mode & stat.S_ISVTX
        if reason is not None and not sticky_root:
            return f"{component} is {reason}"
    return None


def untrusted_tree(directory: Path) -> str | None:
    """Why an entry under `directory` may have been written by another account: one not owned by this
    account, one others may write, or a symbolic link (it could lead anywhere). None when all is ours."""
    owners = {os.geteuid()}
    for root, directories, files in os.walk(directory):
        for name in (*directories, *files):
            entry = Path(root) / name
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                return f"{entry} is a symbolic link"
            reason = written_by_others(info, owners)
            if reason is not None:
                return f"{entry} is {reason}"
    return None


class ForeignDirectoryError(Exception):
    """The daemon runs as root over directories another account could write."""


def refuse_root_over_foreign_directories(directories: Iterable[Path]) -> None:
    """As root, run only over directories root owns and nobody else may write (those not yet made,
    root makes): root started by hand over the service account's state, cache or runtime directory
    would read what that account, or whoever took it over, left there. No check for other accounts."""
    if os.geteuid() != 0:
        return
    for directory in directories:
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            continue
        reason = written_by_others(info, (0,))
        if reason is not None:
            raise ForeignDirectoryError(
                f"running as root, but {directory} is {reason}: run gatewayd as the account that owns its "
                f"directories (systemctl start gatewayd), or give root directories of its own")
