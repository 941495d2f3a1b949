"""The paho-mqtt client of one `mqtt` device: TLS, credentials, session, subscriptions. It never publishes.

paho runs its network loop in a thread of its own (`loop_start`), reconnecting by itself with
delays doubling from `backoff_initial` to `backoff_max`. Its callbacks do no work on that thread:
messages go into the device's bounded `Inbox` with their arrival time, and connection news is
handed to the event loop (`call_soon_threadsafe`) as calls of the `LinkListener`. After every
connect the client subscribes again (a broker that lost its sessions, restarted without
persistence, would otherwise send nothing); the device counts as up only once the broker granted
a subscription (SUBACK), so no message published after that can be missed for want of one.

Read-only: the client has no will message and no code path that publishes, and never sends a
Sparkplug rebirth request (an NCMD would be a write to the plant).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.mqtt.config import MqttSettings
from drivers.inbox import Inbox, Message


class LinkListener(Protocol):
    """What the driver hears about its connection, on the event loop thread."""

    def subscribed(self, granted: Sequence[str], refused: Sequence[tuple[str, str]]) -> None: ...

    def link_down(self, cause: str) -> None: ...

    def woken(self) -> None: ...


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (system CAs without it), TLS 1.2 at least, with the client
    certificate if one is configured."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


def connect_error(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate failed verification: {exc.verify_message.rstrip('.')}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc) if exc is not None else "connection failed"


class Link:
    def __init__(self, name: str, settings: MqttSettings, filters: Sequence[str], inbox: Inbox,
                 listener: LinkListener, loop: asyncio.AbstractEventLoop) -> None:
        self.settings, self.filters, self.inbox = settings, tuple(filters), inbox
        self.listener, self.loop = listener, loop
        self.client_id = settings.client_id or f"gatewayd-{name}"
        self._v5 = settings.mqtt_version == "5"
        self._subscribe_mid: int | None = None
        self._last_error = ""
        self._stopping = False
        self.client = self._make_client()

    def start(self) -> None:
        settings = self.settings
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = int(settings.session_expiry) if settings.persistent_session else 0
        clean_start = not settings.persistent_session if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect_async(settings.host, settings.port, max(1, round(settings.keepalive)),
                                  clean_start=clean_start, properties=properties)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True  # our own disconnect is no outage
        self.client.disconnect()
        self.client.loop_stop()

    def _make_client(self) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=None if self._v5 else not settings.persistent_session,
                             protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311)
        if settings.transport == "tls":
            client.tls_set_context(tls_context(settings))
        if settings.username is not None:
            password = None
            if settings.password_file is not None:
                password = settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            client.username_pw_set(settings.username, password)
        client.reconnect_delay_set(settings.backoff_initial, settings.backoff_max)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    # paho's thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.loop.call_soon_threadsafe(self.listener.link_down, f"broker refused the connection: {reason_code}")
            return
        _, self._subscribe_mid = client.subscribe([(topic, self.settings.qos) for topic in self.filters])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        granted = [topic for topic, code in zip(self.filters, reason_codes) if not code.is_failure]
        refused = [(topic, str(code)) for topic, code in zip(self.filters, reason_codes) if code.is_failure]
        self.loop.call_soon_threadsafe(self.listener.subscribed, granted, refused)

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:`, so the error of the attempt is at hand
        self.loop.call_soon_threadsafe(self.listener.link_down, connect_error(sys.exc_info()[1]))

    def _on_log(self, client, userdata, level, message) -> None:
        if level == mqtt.MQTT_LOG_ERR:  # e.g. the TLS alert a broker closed the link with
            self._last_error = message

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        detail, self._last_error = self._last_error, ""
        if self._stopping:
            return
        cause = f"connection lost: {reason_code}" + (f" ({detail})" if detail else "")
        self.loop.call_soon_threadsafe(self.listener.link_down, cause)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        read_at = time.monotonic()
        try:
            topic = message.topic
        except UnicodeDecodeError:
            return  # paho's own check lets no such topic through; nothing could route it anyway
        payload = message.payload if len(message.payload) <= self.settings.max_payload else None
        if self.inbox.put(Message(topic, payload, read_at)):
            self.loop.call_soon_threadsafe(self.listener.woken)
