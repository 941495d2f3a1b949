"""When to try the broker again: at once while nobody answers at its port, backing off once a broker took part.

An attempt that fails before any broker took part (the port refuses, the host or network cannot be
reached, the TCP connect times out) cost the broker nothing: it is one TCP SYN answered by a reset or
by no one, as cheap as any probe. Such attempts are repeated every `fast` seconds, so live data
flows again within a second or so of the broker accepting connections. An attempt that a broker
took part in and then failed (the TLS handshake, a refused CONNACK, a link closed before it was
accepted) or a name that did not resolve (the DNS server's load) backs off from `initial`,
doubling to `maximum`, so a broker that is up but refuses us is not hammered. A connection the
broker accepted resets the backoff; losing it is retried after `fast`.

    redial = Redial()
    redial.unreachable()   # 0.5: the port refused, try again soon
    redial.refused()       # 1.0, then 2.0, 4.0, ... 30.0
    redial.accepted()      # back to 1.0 for the next refusal
"""

from __future__ import annotations

import errno
import socket
import ssl

FAST = 0.5  # seconds between attempts while the broker's port cannot be reached
INITIAL, MAXIMUM = 1.0, 30.0  # backoff after an attempt the broker took part in

# errnos of a connect that never reached a listening broker
UNREACHABLE = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
               errno.ETIMEDOUT}


def before_any_broker(exc: BaseException | None) -> bool:
    """True when a failed connection attempt never reached a broker: refused, unreachable or timed out."""
    if isinstance(exc, (ssl.SSLError, socket.gaierror)):
        return False
    return isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno in UNREACHABLE)


class Redial:
    def __init__(self, fast: float = FAST, initial: float = INITIAL, maximum: float = MAXIMUM) -> None:
        self.fast, self.initial, self.maximum = fast, initial, maximum
        self._next = initial

    def unreachable(self) -> float:
        """Delay after an attempt that no broker took part in."""
        return self.fast

    def refused(self) -> float:
        """Delay after an attempt a broker took part in and refused; doubles each time, up to `maximum`."""
        delay, self._next = self._next, min(self.maximum, 2 * self._next)
        return delay

    def accepted(self) -> None:
        """The broker accepted a connection: the next refusal starts the backoff afresh."""
        self._next = self.initial

    def after(self, exc: BaseException | None) -> float:
        """Delay after a connection attempt failed with `exc`."""
        return self.unreachable() if before_any_broker(exc) else self.refused()
