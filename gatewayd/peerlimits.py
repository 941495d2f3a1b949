"""What a local peer can hold of the daemon: connections, descriptors, request bytes and nesting, log lines.

The control socket and the metrics endpoint are open to other processes on the box. Without limits,
1,000 idle connections used up the daemon's descriptors and a restarted PLC could not be reconnected,
and every refused request logged a traceback until journald's rate limit dropped real device_down
lines. So both servers:
- admit a connection only into a free `Slots` place (a total cap, a cap per kernel account, and never
  into the last `reserved_descriptors` descriptors of the process, which stay for drivers, store
  and uplink); a refused connection is closed at once, before anything is read from it;
- measure a request before parsing it (`nesting_depth` is a linear scan in C, so a 500,000-bracket
  line costs microseconds and never reaches the recursive JSON parser);
- report refusals through `RefusalLog`: one line per peer and period, with the count of the others.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

log = logging.getLogger("gatewayd.limits")

DESCRIPTOR_DIR = "/proc/self/fd"


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the unit's LimitNOFILE=); return the soft limit now.

    A sandbox that forbids setrlimit (the unit's SystemCallFilter) leaves the soft limit as it was; the
    unit sets both limits, so nothing is lost."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d (%s); peers are capped within %d",
                        soft, hard, exc, soft)
    return soft


def open_descriptors() -> int:
    return len(os.listdir(DESCRIPTOR_DIR)) - 1  # the listing's own descriptor


@dataclass
class DescriptorReserve:
    """The last `reserved` descriptors below `limit` are never given to a peer."""

    limit: int
    reserved: int
    count: Callable[[], int] = open_descriptors

    def room(self) -> int:
        """Descriptors peers may still take."""
        return self.limit - self.reserved - self.count()

    def exhausted(self) -> bool:
        return self.room() <= 0

    def warn_if_short(self, wanted: int) -> None:
        """One line at start when the limit cannot give peers what the caps allow."""
        room = self.room()
        if room < wanted:
            log.warning("descriptor limit %d leaves room for %d peer connections beyond the %d reserved, fewer "
                        "than the %d the limits allow: raise LimitNOFILE", self.limit, max(room, 0), self.reserved,
                        wanted)


class Slots:
    """Connections held by peers of one server: at most `total`, at most `per_account` from one account
    (None: no per-account cap), and none once the process reaches its descriptor reserve.

    `admit(account)` returns None and takes a place, or the reason of a refusal; `release(account)`
    gives the place back when the connection ends."""

    def __init__(self, total: int, per_account: int | None, reserve: DescriptorReserve | None):
        self.total, self.per_account, self.reserve = total, per_account, reserve
        self.held: dict[object, int] = {}
        self.count = 0

    def admit(self, account: object) -> str | None:
        if self.count >= self.total:
            return f"all {self.total} connections are taken"
        if self.per_account is not None and self.held.get(account, 0) >= self.per_account:
            return f"the account holds its {self.per_account} connections already"
        if self.reserve is not None and self.reserve.exhausted():
            return (f"the last {self.reserve.reserved} of {self.reserve.limit} descriptors are kept for the "
                    f"devices, the store and the uplink")
        self.held[account] = self.held.get(account, 0) + 1
        self.count += 1
        return None

    def release(self, account: object) -> None:
        self.count -= 1
        left = self.held[account] - 1
        if left:
            self.held[account] = left
        else:
            del self.held[account]


class RefusalLog:
    """One warning per peer and `interval`: the first refusal is logged when it happens, the others in the
    period are counted and named in the peer's next line. A peer that floods refusals therefore costs a
    line a minute, and journald's rate limit is left for the plant's own messages."""

    MAX_PEERS = 1024  # peers remembered; beyond it, those quiet for a whole period are forgotten

    def __init__(self, what: str, interval: float, clock: Callable[[], float] = time.monotonic):
        self.what, self.interval, self.clock = what, interval, clock
        self._peers: dict[str, list[float | int]] = {}  # peer -> [time of its last line, refusals since]

    def refused(self, peer: str, reason: str) -> None:
        now = self.clock()
        entry = self._peers.get(peer)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        more = f" ({entry[1]} more refused in the {self.interval:g} s before)" if entry and entry[1] else ""
        log.warning("%s: refused %s: %s%s; next report in %g s at most", self.what, peer, reason, more,
                    self.interval)
        if entry is None and len(self._peers) >= self.MAX_PEERS:
            self._forget_quiet(now)
        self._peers[peer] = [now, 0]

    def _forget_quiet(self, now: float) -> None:
        for peer in [peer for peer, (at, _) in self._peers.items() if now - at >= self.interval]:
            del self._peers[peer]


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(code for code in range(256) if code not in _BRACKETS)
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(document: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings do not count).

    Linear, and the loops run in C (regex, translate, accumulate), so it is safe on hostile input; the
    recursive JSON parser sees only what passed it."""
    brackets = _JSON_STRING.sub(b"", document).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
