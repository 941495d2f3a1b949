"""A small MQTT subscriber that collects raw batch payloads, for `gatewayd verify --broker`,
the HIL tests and the demo viewer.

paho runs its network loop in its own thread and reconnects by itself; `on_connect`
subscribes again every time, so a broker restart costs a few seconds, not the receiver. The
session is resumed on reconnect (MQTT v5 session expiry), so QoS 1 batches published while the
link was down are delivered once it is back, unless the broker itself lost its state.

    with Receiver("localhost", 1883, "gatewayd/gw-1/batch", insecure_plain=True) as rx:
        rx.wait_for(lambda frames: len(frames) >= 10, timeout=30)
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.platform.capture import write_frame

log = logging.getLogger(__name__)


class Receiver:
    """Subscribe to `topic` at QoS 1 and keep every payload, in arrival order."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        insecure_plain: bool = False,
        capture_path: Path | None = None,
        client_id: str | None = None,
        session_expiry: int = 300,
    ) -> None:
        self.host, self.port, self.topic = host, port, topic
        self._frames: list[bytes] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._stopping = False
        self._capture = open(capture_path, "ab") if capture_path else None
        self._session_expiry = session_expiry
        self.connects = 0
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"gatewayd-receiver-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if not insecure_plain:
            self._client.tls_set(
                ca_certs=str(ca_file) if ca_file else None,
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait until the subscription is granted; raise TimeoutError otherwise."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self._session_expiry
        # clean_start False from the first connect: mosquitto keeps (and persists) only such sessions
        self._client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=properties)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"not subscribed to {self.topic} on {self.host}:{self.port} after {timeout}s")

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        if self._capture:
            self._capture.close()
            self._capture = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def frames(self) -> list[bytes]:
        """A copy of every payload received so far."""
        with self._changed:
            return list(self._frames)

    def wait_for(self, predicate: Callable[[list[bytes]], bool], timeout: float) -> bool:
        """Wait until `predicate(frames)` holds; False if `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._frames)):
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    return predicate(list(self._frames))
        return True

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%s refused connection: %s", self.host, self.port, reason_code)
            return
        self.connects += 1
        log.info("connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present)
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if all(not code.is_failure for code in reason_codes):
            self._subscribed.set()
        else:
            log.error("subscription to %s refused: %s", self.topic, reason_codes)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._stopping:
            return
        log.warning("disconnected from %s:%s: %s; reconnecting", self.host, self.port, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        """Runs in paho's thread; the PUBACK goes out after it returns, so capture first."""
        payload = bytes(message.payload)
        with self._changed:
            if self._capture:
                write_frame(self._capture, payload)
                self._capture.flush()
            self._frames.append(payload)
            self._changed.notify_all()
