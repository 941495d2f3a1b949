"""Simulated gateways for the ingest service: each has its own Ed25519 key and builds and signs real batches
(core.batchformat), chained exactly as the daemon chains them, in protocol 1.1 (or 1.0 with `epoch=None`):
resets begin a new epoch with a signed chain_reset, rotations announce the next key in a batch signed by
the current one, heartbeats name the head. A publisher sends them to the broker at QoS 1.

Every sample a fleet builds is unique per gateway by (tag, ts), so a test can count that each is stored
exactly once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.batchformat import CHAIN_RESET, KEY_ROTATION, ZERO_EPOCH, encode_envelope, encode_heartbeat

START_MS = 1_790_000_000_000  # 2026-09-21, a fixed day: partitions and counts do not depend on the clock


@dataclass
class SimGateway:
    gateway_id: str
    tags: int = 10
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    boot_id: bytes = field(default_factory=lambda: os.urandom(16))
    seq: int = 0
    prev_hash: bytes = bytes(32)
    clock_ms: int = START_MS
    epoch: bytes | None = ZERO_EPOCH  # None: protocol 1.0 envelopes
    samples_built: int = 0
    events_built: int = 0
    next_key: Ed25519PrivateKey | None = None  # announced, signing once the announcing batch is out
    control: list[dict] = field(default_factory=list)  # events the next batch carries first

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def write_public_key(self, path: Path) -> Path:
        path.write_bytes(self.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        return path

    def body(self, samples: int, events: int = 0) -> dict:
        """`samples` readings spread over the gateway's tags, one ms apart, and `events` alarm events."""
        names = [f"PT-{i:03d}" for i in range(min(self.tags, samples))]
        ts = [self.clock_ms + i for i in range(samples)]
        self.clock_ms += samples
        body = {
            "tags": names,
            "samples": {
                "tag": [i % len(names) for i in range(samples)] if names else [],
                "ts": ts,
                "value": [round(20.0 + (t % 1000) / 100, 2) for t in ts],
                "quality": [0] * samples,
                "source_ts": [None] * samples,
            },
            "events": [
                {"ts": self.clock_ms + i, "kind": "alarm", "source": "PT-000", "priority": 2,
                 "message": "PT-000 high", "data": {"alarm": "PT-000.H", "state": "active", "value": 31.5}}
                for i in range(events)
            ],
        }
        self.clock_ms += events
        return body

    def sign(self, body: dict) -> bytes:
        """The next batch of the chain carrying `body` (after any pending control events)."""
        self.seq += 1
        self.clock_ms += 1
        body["events"][:0], self.control = self.control, []
        envelope = encode_envelope(body, gateway_id=self.gateway_id, boot_id=self.boot_id, seq=self.seq,
                                   prev_hash=self.prev_hash, created_ms=self.clock_ms, private_key=self.key,
                                   epoch=self.epoch)
        self.prev_hash = hashlib.sha256(envelope).digest()
        self.samples_built += len(body["samples"]["ts"])
        self.events_built += len(body["events"])
        if self.next_key is not None and any(e["kind"] == KEY_ROTATION for e in body["events"]):
            self.key, self.next_key = self.next_key, None  # as if the broker acknowledged the announcement
        return envelope

    def _control(self, kind: str, priority: int, data: dict) -> None:
        self.control.append({"ts": self.clock_ms, "kind": kind, "source": self.gateway_id, "priority": priority,
                             "message": f"{self.gateway_id} {kind}", "data": data})

    def rotate(self) -> None:
        """`gatewayd keygen --rotate`: the next batch announces a new key; those after it are signed by it."""
        self.next_key = Ed25519PrivateKey.generate()
        raw = self.next_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._control(KEY_ROTATION, 1, {"next_public_key": raw.hex(),
                                         "next_key_id": hashlib.sha256(raw).hexdigest()[:16]})

    def reset(self, reason: str = "database_lost") -> None:
        """A gateway that lost its chain begins a new epoch; its next batch is seq 1 with a chain_reset."""
        previous = {"previous_epoch": self.epoch.hex(), "previous_seq": self.seq, "previous_hash": self.prev_hash.hex()}
        self.epoch, self.seq, self.prev_hash, self.boot_id = os.urandom(16), 0, bytes(32), os.urandom(16)
        self._control(CHAIN_RESET, 2, {"epoch": self.epoch.hex(), "reason": reason, **previous})

    def heartbeat(self, oldest_unacknowledged: int | None = None) -> bytes:
        """A heartbeat naming the head of the chain."""
        self.clock_ms += 1
        return encode_heartbeat(gateway_id=self.gateway_id, epoch=self.epoch, boot_id=self.boot_id,
                                head_seq=self.seq, head_hash=self.prev_hash if self.seq else bytes(32),
                                created_ms=self.clock_ms, private_key=self.key, interval=60.0,
                                oldest_unacknowledged=oldest_unacknowledged)

    def next_batch(self, samples: int, events: int = 0) -> bytes:
        return self.sign(self.body(samples, events))

    def restart(self) -> None:
        """A daemon restart: a new boot id, the chain goes on."""
        self.boot_id = os.urandom(16)

    @property
    def topic(self) -> str:
        return f"gatewayd/{self.gateway_id}/batch"

    @property
    def heartbeat_topic(self) -> str:
        return f"gatewayd/{self.gateway_id}/heartbeat"


def fleet(count: int, tags: int = 10, prefix: str = "SIM-GW") -> list[SimGateway]:
    return [SimGateway(f"{prefix}-{i:04d}", tags) for i in range(count)]


class Publisher:
    """A QoS 1 publisher that waits for the broker's acknowledgement of everything it sent, reconnecting
    (and paho republishing the unacknowledged) across a broker restart."""

    def __init__(self, port: int, client_id: str = "uplink-fleet") -> None:
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._connects = 0
        self._changed = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.connect_async("127.0.0.1", port, keepalive=30, clean_start=False)
        self._client.loop_start()
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self.port = port
        self.wait_connects(1)

    @property
    def connects(self) -> int:
        return self._connects

    def _on_connect(self, *args) -> None:
        with self._changed:
            self._connects += 1
            self._changed.notify_all()

    def wait_connects(self, count: int, timeout: float = 30.0) -> None:
        """Wait for the `count`-th connection (say, after a broker restart) before publishing more."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._connects >= count, timeout):
                raise TimeoutError(f"publisher not connected to 127.0.0.1:{self.port} after {timeout} s")

    def publish(self, topic: str, payload: bytes) -> None:
        self._pending.append(self._client.publish(topic, payload, qos=1))

    def wait_acknowledged(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self._pending:
            while not info.is_published():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"broker did not acknowledge every batch within {timeout} s")
                time.sleep(0.01)
        self._pending.clear()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
