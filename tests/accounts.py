"""Real accounts for tests that need the kernel to say who is calling: throwaway groups and users made
with groupadd/useradd and removed after, and `call_as`, a control-socket call from a forked child that
has dropped to such an account. The suite runs as root (here and in CI), which both need."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from gatewayd.operator.control import CommandError, ControlError, call


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def throwaway_accounts(groups: Sequence[str],
                       users: Mapping[str, Sequence[str]]) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create `groups`, then each user (name -> its supplementary groups) with a primary group of its own;
    yield name -> passwd entry; remove them all afterwards, even when the test fails."""
    made_groups: list[str] = []
    made_users: list[str] = []
    try:
        for group in groups:
            _run("groupadd", group)
            made_groups.append(group)
        for user, member_of in users.items():
            _run("useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                 *(("--groups", ",".join(member_of)) if member_of else ()), user)
            made_users.append(user)
        yield {user: pwd.getpwnam(user) for user in users}
    finally:
        for user in made_users:
            subprocess.run(("userdel", user), capture_output=True, timeout=30)
        for group in made_groups:
            subprocess.run(("groupdel", group), capture_output=True, timeout=30)


def unique_prefix() -> str:
    """Short enough for 32-character names, distinct between parallel runs."""
    return f"gwt{os.getpid() % 100000}{os.urandom(2).hex()}"


def call_as(account: pwd.struct_passwd | tuple[int, int, list[int]], path: Path, request: Mapping) -> list:
    """`call` from a forked child running as `account` (a passwd entry, its groups as the system lists
    them; or uid, gid and groups): the kernel checks the socket's permissions against that account, and
    SO_PEERCRED reports it. Returns ["ok", result] or [exception class name, message]. The child enters
    the socket's directory before it drops to the account, so test directories above it (pytest's are
    0700 root) need not be opened to others: the socket's own directory and mode still decide."""
    if isinstance(account, pwd.struct_passwd):
        uid, gid, groups = account.pw_uid, account.pw_gid, os.getgrouplist(account.pw_name, account.pw_gid)
    else:
        uid, gid, groups = account
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the account, call, report, and leave without cleanup
        try:
            os.close(read_end)
            os.chdir(path.parent)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            try:
                outcome = ["ok", call(Path(path.name), request, timeout=10)]
            except (ControlError, CommandError) as exc:
                outcome = [type(exc).__name__, str(exc)]
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        outcome = json.loads(answer.read() or b'["ChildDied", ""]')
    os.waitpid(pid, 0)
    return outcome
