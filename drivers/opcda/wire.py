"""Pyro5 held to what a gateway can afford with a bridge it does not trust: serpent only, bounded messages.

Left to its defaults, Pyro5 lets the peer choose: a reply is decoded with whatever serializer its
header names (the handshake answer with any of them, marshal included, which Python documents as
unsafe for untrusted data), and a header may announce up to 1 GiB, which Pyro5 then reads into
memory. The DA bridge is a Windows machine on the control network, and the gateway must outlive it
turning hostile. `harden()` therefore sets, for the whole process (Pyro5's settings are global, and
nothing else here speaks Pyro5):

- requests go out in serpent, and every message received in any other serializer is refused from
  its header, before its body is decoded (`ForeignSerializer`), at the handshake as on every call;
- a message announcing more than `MAX_MESSAGE_SIZE` bytes is refused from its header, before its
  body is read (Pyro5's `ProtocolError`, "message too large").
"""

from __future__ import annotations

import Pyro5
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers

SERIALIZER = "serpent"
MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # a group read of 10,000 items is about 1 MB of serpent
SERPENT_ID = Pyro5.serializers.serializers[SERIALIZER].serializer_id
NAMES = {serializer.serializer_id: name for name, serializer in Pyro5.serializers.serializers.items()}


class ForeignSerializer(Pyro5.errors.SerializeError):
    """The bridge sent a message in another serializer than serpent; it was not decoded."""


def _receive_serpent_only(connection, accepted_msgtypes=None):
    message = _receive(connection, accepted_msgtypes)
    if message.serializer_id != SERPENT_ID:
        name = NAMES.get(message.serializer_id, f"unknown serializer {message.serializer_id}")
        raise ForeignSerializer(f"the bridge answered in {name}; only {SERIALIZER} is accepted "
                                "(the message was not decoded)")
    return message


_receive = Pyro5.protocol.recv_stub


def harden() -> None:
    """Apply the settings above; idempotent. Called before any proxy is made."""
    Pyro5.config.SERIALIZER = SERIALIZER
    Pyro5.config.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
    Pyro5.protocol.recv_stub = _receive_serpent_only
