"""When the publisher tries the broker again: fast while no broker answers, backing off once one refuses us."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from gatewayd.uplink.redial import FAST, INITIAL, MAXIMUM, Redial, before_any_broker


@pytest.mark.parametrize("error, expected", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
    (OSError(errno.EHOSTUNREACH, "No route to host"), True),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), True),
    (TimeoutError("timed out"), True),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
    (ssl.SSLError(1, "TLSV13_ALERT_CERTIFICATE_REQUIRED"), False),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), False),
    (None, False),
])
def test_only_attempts_that_reached_no_broker_count_as_unreachable(error, expected):
    assert before_any_broker(error) is expected


def test_unreachable_retries_fast_and_refusals_back_off_to_the_bound():
    redial = Redial()
    assert [redial.after(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) for _ in range(3)] == [FAST] * 3
    refusals = [redial.after(ssl.SSLError(1, "handshake failure")) for _ in range(7)]
    assert refusals == [INITIAL, 2 * INITIAL, 4 * INITIAL, 8 * INITIAL, 16 * INITIAL, MAXIMUM, MAXIMUM]
    assert redial.unreachable() == FAST, "a broker that went away is retried fast whatever the backoff"
    redial.accepted()
    assert redial.refused() == INITIAL, "an accepted connection starts the backoff afresh"
