"""Who may do what on the control socket: roles from the kernel's account and its groups.

The account is the one the kernel reports for the connection (SO_PEERCRED, `control.Peer`); nothing a
client writes in a request names anyone. Its roles come from group membership, as `control:` in the
config names the groups (`gatewayd.config.model.ControlConfig`):

- view: read (status, tail, points, alarm actions, alarms, interlocks, bypass list and requests): members
  of any of the three;
- operator: act on alarms, request and revoke bypasses, reload: members of `operator_group`;
- approver: approve another account's request: members of `approver_group`. Being an operator gives
  no approval, and approving gives no operating.

Root (uid 0) and the daemon's own account hold every role: root owns the machine, the daemon's files
and its key anyway, and the daemon's account is what `systemctl`-driven tooling runs as. Neither may
approve its own request: four eyes are counted in accounts (`rules.requests`).

The groups are the peer's gid plus the supplementary groups of its account (`os.getgrouplist`), so
membership follows /etc/group (or NSS) and not what a process chose to keep. Resolutions are kept
`CACHE_SECONDS` per account: an account removed from a group loses its role within that time.

    access = Access(config.control)
    access.check("ack", peer)        # CommandError naming the role needed, the account and its roles
"""

from __future__ import annotations

import grp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.config.model import ControlConfig
from gatewayd.operator.control import CommandError, Peer

VIEW, OPERATOR, APPROVER = "view", "operator", "approver"
ROLES = (VIEW, OPERATOR, APPROVER)
CACHE_SECONDS = 10.0  # how long an account's resolved roles are reused

# command -> the role it needs; a command missing here is refused to everybody but root and the daemon
COMMAND_ROLES = {
    "status": VIEW, "tail": VIEW, "points": VIEW, "alarm_actions": VIEW, "alarms": VIEW, "interlocks": VIEW,
    "bypass_list": VIEW, "requests": VIEW,
    "ack": OPERATOR, "shelve": OPERATOR, "unshelve": OPERATOR, "out_of_service": OPERATOR,
    "return_to_service": OPERATOR, "reset": OPERATOR, "bypass_request": OPERATOR, "bypass_revoke": OPERATOR,
    "reload": OPERATOR,
    "approve": APPROVER,
}


@dataclass(frozen=True)
class Grant:
    """An account's roles."""

    roles: frozenset[str]
    everything_because: str = ""  # "root" or "the daemon's account" when the account holds every role


class Access:
    """Resolves a peer's roles and judges a command against `COMMAND_ROLES`."""

    def __init__(self, config: ControlConfig, daemon_uid: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self.clock = clock
        self._cache: dict[tuple[int, int], tuple[float, Grant]] = {}

    def group_of(self, role: str) -> str:
        return {VIEW: self.config.view_group, OPERATOR: self.config.operator_group,
                APPROVER: self.config.approver_group}[role]

    def grant(self, peer: Peer) -> Grant:
        key = (peer.uid, peer.gid)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        grant = self._resolve(peer)
        self._cache[key] = (now + CACHE_SECONDS, grant)
        return grant

    def _resolve(self, peer: Peer) -> Grant:
        if peer.uid == 0:
            return Grant(frozenset(ROLES), "root")
        if peer.uid == self.daemon_uid:
            return Grant(frozenset(ROLES), "the daemon's account")
        gids = {peer.gid}
        if peer.user != str(peer.uid):  # an account with a name has supplementary groups
            gids.update(os.getgrouplist(peer.user, peer.gid))
        member = {role: group_gid(self.group_of(role)) in gids for role in ROLES}
        roles = {role for role in (OPERATOR, APPROVER) if member[role]}
        if roles or member[VIEW]:
            roles.add(VIEW)
        return Grant(frozenset(roles))

    def check(self, command: str, peer: Peer) -> None:
        """Return if `peer` may run `command`, else raise CommandError naming the role, its group and the
        account (the control server logs it once per account and `limits.refusal_log_interval`)."""
        grant = self.grant(peer)
        needed = COMMAND_ROLES.get(command)
        if grant.everything_because or (needed is not None and needed in grant.roles):
            return
        if needed is None:
            message = f"{command!r} is open to root and the daemon's account only; account {peer.user} is neither"
        else:
            held = ", ".join(role for role in ROLES if role in grant.roles) or "no role"
            message = (f"{command.replace('_', ' ')} needs the {needed} role (membership of group "
                       f"{self.group_of(needed)}); account {peer.user} holds {held}")
        raise CommandError(message)


def group_gid(name: str) -> int | None:
    """The gid of a group by name; None when no such group exists (then nobody holds its role)."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
