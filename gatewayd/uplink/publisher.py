"""Publish signed batches from the store over MQTT QoS 1 and delete rows only on PUBACK.

paho-mqtt runs its network loop in one thread of its own (`loop_start`); its callbacks only hand
over to the event loop with `call_soon_threadsafe`, so all bookkeeping happens on the loop thread and
a PUBACK can never be processed before the publish that it answers was recorded.

Reconnecting is paho's, on a schedule of ours (`gatewayd.uplink.redial`): while the broker's port
refuses or cannot be reached, every 0.5 s (an attempt then costs one TCP SYN, as cheap as a probe),
so live data flows again within a second or so of the broker's return; after an attempt a broker took
part in and refused (TLS, CONNACK, closed before accepting), 1 s doubling to 30 s. paho's callbacks
set the delay of its next attempt in its own thread, before it starts waiting.

paho's in-memory queue is never trusted: a batch is republished from the store when its PUBACK has
not come within `ack_timeout`, and after a restart every batch built but not acknowledged is sent
again with the same bytes and sequence number (the receiver deduplicates by sequence).

Backfill: after an outage the stored rows go oldest first, but a `live_share` of the batches built
while a backlog remains carries the newest rows instead, so the platform's live view stays current
while the backlog drains. Sequence numbers follow build order, so during a backfill the rows of
consecutive seqs are not in time order (docs/uplink.md, docs/reliability.md). An optional rate limit
(`max_bytes_per_second`, a token bucket allowing one second of burst) paces every publish, republishes
included. A full disk makes building and acknowledging fail for a while: both are retried, the
loop never dies of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from gatewayd.config.model import UplinkConfig
from gatewayd.keys import public_key_fingerprint
from gatewayd.secretfiles import read_private
from core.batchformat import encode_heartbeat
from gatewayd.uplink.batch import encode_batch
from gatewayd.uplink.epoch import marker_path, reset_event, write_marker
from gatewayd.uplink.redial import Redial
from gatewayd.uplink.rotation import KeyRotation
from store import Batch, BatchContent, SampleBlock, Store, is_disk_full
from core.waits import wait_set

log = logging.getLogger("gatewayd.uplink")


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    batches_published: int = 0
    republished: int = 0
    acknowledged: int = 0
    rows_acknowledged: int = 0
    bytes_published: int = 0
    rejected: int = 0
    live_batches: int = 0
    throttled: int = 0
    heartbeats: int = 0
    store_errors: int = 0
    last_ack_monotonic: float = 0.0


@dataclass
class _InFlight:
    batch: Batch
    mid: int
    sent_at: float


def tls_context(config: UplinkConfig) -> ssl.SSLContext:
    """Verify the broker's certificate and host name; system CAs unless a CA file is configured."""
    context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls.cert_file is not None:
        context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    return context


# TLS alerts with which a broker refuses a client that sent no certificate: during the handshake with
# TLS 1.2, right after it (on the first read) with TLS 1.3
NO_CLIENT_CERTIFICATE = ("SSLV3_ALERT_HANDSHAKE_FAILURE", "TLSV13_ALERT_CERTIFICATE_REQUIRED")


def _certificate_hint(detail: str, config: UplinkConfig) -> str:
    if config.transport == "tls" and config.tls.cert_file is None \
            and any(alert in detail for alert in NO_CLIENT_CERTIFICATE):
        return "; the broker probably requires a client certificate (uplink.tls.cert_file and key_file)"
    return ""


def connect_error(exc: BaseException | None, config: UplinkConfig) -> str:
    """Why a connection attempt failed, in words an integrator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate failed verification: {exc.verify_message.rstrip('.')}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}{_certificate_hint(str(exc), config)}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) if exc is not None else "no reason given"


def dropped_before_accepting(detail: str, config: UplinkConfig) -> str:
    """Why the broker closed a connection before its CONNACK; `detail` is paho's last error (a TLS alert)."""
    return f"the broker closed the connection before accepting it ({detail}){_certificate_hint(detail, config)}"


class Publisher:
    def __init__(self, config: UplinkConfig, gateway_id: str, store: Store, private_key, boot_id: bytes,
                 next_key=None):
        self.config, self.gateway_id, self.store = config, gateway_id, store
        self.boot_id = boot_id
        self.keys = KeyRotation(store, private_key, next_key)
        # the platform compares this with the fingerprint of the public key it was handed (docs/uplink.md)
        log.info("signing key %s: fingerprint %s", config.signing_key,
                 public_key_fingerprint(self.keys.signer.public_key()))
        head = store.chain_head()
        self.epoch = head.epoch
        self._reset = reset_event(head, gateway_id)  # seq 1 of a new epoch begins with it
        self._announcing: int | None = None  # set by _encode when the batch being built announces the next key
        self._next_heartbeat = float("inf")  # monotonic; the first goes out right after connecting
        self.topic, self.heartbeat_topic = config.topic(gateway_id), config.heartbeat_topic(gateway_id)
        self.stats = UplinkStats()
        self.progress_monotonic = time.monotonic()
        self._inflight: dict[int, _InFlight] = {}
        self._by_mid: dict[int, int] = {}
        self._unsent: deque[Batch] = deque(store.pending_batches())
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._stopping = False
        self._live_credit = 0.0
        self._unacknowledged: list[int] = []  # PUBACKed seqs whose delete failed on a full disk
        self._connect_error: str | None = None  # why the last attempt failed, until one succeeds
        self._paho_error = ""  # paho's last error message; written and read on paho's thread only
        self._redial = Redial()  # used on paho's thread only
        self._link_accepted = False  # the broker accepted the current link; paho's thread only
        self._allowance = float(config.max_bytes_per_second or 0)
        self._refilled = time.monotonic()
        # called as on_built(samples, created) with each new batch's samples and its creation time (Unix
        # seconds), right before it is first handed to the broker: the data-quality timeliness figures
        self.on_built: Callable[[SampleBlock, float], None] | None = None

    def wake(self) -> None:
        """Called after each store commit: there may be rows to send."""
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._client.connect_async(self.config.host, self.config.port, int(self.config.keepalive))
        self._client.loop_start()
        try:
            while True:
                self._pump()
                self._heartbeat()
                self.progress_monotonic = time.monotonic()
                await wait_set(self._wake, 1.0)
                self._wake.clear()
        finally:
            self._stopping = True
            self._client.disconnect()
            self._client.loop_stop()
            self._write_marker()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.config.client_id,
                             protocol=mqtt.MQTTv5)
        if self.config.transport == "tls":
            client.tls_set_context(tls_context(self.config))
        if self.config.username is not None:
            password = None
            if self.config.password_file is not None:
                password = read_private(self.config.password_file, "broker password file").decode("utf-8").strip()
            client.username_pw_set(self.config.username, password)
        client.reconnect_delay_set(self._redial.fast, self._redial.fast)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_log = self._on_log
        return client

    # paho thread -> event loop
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._redial.accepted()
            self._link_accepted = True
        self._loop.call_soon_threadsafe(self._connected, not reason_code.is_failure, str(reason_code))

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:`, so the error of the attempt is still at hand
        error = sys.exc_info()[1]
        delay = self._redial.after(error)
        client.reconnect_delay_set(delay, delay)
        self._loop.call_soon_threadsafe(self._connect_failed, connect_error(error, self.config), delay)

    def _on_log(self, client, userdata, level, message) -> None:
        if level == mqtt.MQTT_LOG_ERR:  # e.g. the TLS alert a broker closed the link with
            self._paho_error = message

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        detail, self._paho_error = self._paho_error or str(reason_code), ""
        delay = self._redial.fast if self._link_accepted else self._redial.refused()
        self._link_accepted = False
        client.reconnect_delay_set(delay, delay)
        self._loop.call_soon_threadsafe(self._disconnected, str(reason_code), detail, delay)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self._acknowledged, mid, reason_code.is_failure, str(reason_code))

    # event loop side
    def _connected(self, ok: bool, reason: str) -> None:
        if not ok:
            log.warning("broker %s:%d refused the connection: %s", self.config.host, self.config.port, reason)
            return
        self.stats.connected = True
        self.stats.connects += 1
        self._next_heartbeat = time.monotonic()
        self._connect_error = None
        log.info("connected to broker %s:%d, publishing to %s", self.config.host, self.config.port, self.topic)
        self._wake.set()

    def _connect_failed(self, cause: str, delay: float) -> None:
        """paho retries after `delay` (see `redial`): the first failure, or a new cause, is a warning;
        repeats go to debug."""
        level = logging.DEBUG if cause == self._connect_error else logging.WARNING
        self._connect_error = cause
        log.log(level, "cannot connect to broker %s:%d: %s; retrying in %g s", self.config.host, self.config.port,
                cause, delay)

    def _disconnected(self, reason: str, detail: str, delay: float) -> None:
        if not self.stats.connected and not self._stopping:
            self._connect_failed(dropped_before_accepting(detail, self.config), delay)
        if self.stats.connected and not self._stopping:
            log.warning("lost the broker connection (%s); %d batches await acknowledgement",
                        reason, len(self._inflight))
            self.stats.disconnects += 1
        self.stats.connected = False

    def _acknowledged(self, mid: int, failed: bool, reason: str) -> None:
        seq = self._by_mid.pop(mid, None)
        if seq is None or seq not in self._inflight:
            return  # a late PUBACK for a batch already acknowledged through a republish
        if failed:
            log.error("broker rejected batch %d: %s; it stays stored and will be retried", seq, reason)
            self.stats.rejected += 1
            self._inflight[seq].sent_at = -float("inf")
            return
        del self._inflight[seq]
        for stale_mid in [m for m, s in self._by_mid.items() if s == seq]:
            del self._by_mid[stale_mid]  # earlier publishes of the same batch
        self.stats.acknowledged += 1
        self.stats.last_ack_monotonic = time.monotonic()
        self.keys.acknowledged(seq)
        self._unacknowledged.append(seq)
        self._delete_acknowledged()
        self._wake.set()

    def _delete_acknowledged(self) -> None:
        while self._unacknowledged:
            try:
                self.stats.rows_acknowledged += self.store.acknowledge(self._unacknowledged[0])
            except sqlite3.Error as exc:
                self._store_error(exc, "deleting acknowledged rows")
                return
            self._unacknowledged.pop(0)

    def _store_error(self, exc: sqlite3.Error, doing: str) -> None:
        if not is_disk_full(exc):
            raise exc
        self.stats.store_errors += 1
        level = logging.WARNING if self.stats.store_errors == 1 else logging.DEBUG
        log.log(level, "store error while %s (%s); retried", doing, exc)

    def _pump(self) -> None:
        self._delete_acknowledged()
        if not self.stats.connected:
            return
        now = time.monotonic()
        for flight in list(self._inflight.values()):
            if now - flight.sent_at >= self.config.ack_timeout and self._may_send():
                self.stats.republished += 1
                self._publish(flight.batch)
        while len(self._inflight) < self.config.max_inflight and self._may_send():
            batch = self._unsent.popleft() if self._unsent else self._build()
            if batch is None or not self._publish(batch):
                break

    def _build(self) -> Batch | None:
        """The next batch: oldest rows first, but the newest rows for `live_share` of them during a backfill."""
        limit = self.config.batch_max_rows
        self._live_credit += self.config.live_share
        newest = self._live_credit >= 1.0
        self._announcing = None
        try:
            batch = self.store.build_batch(limit, self._encode, newest=newest)
        except sqlite3.Error as exc:
            self._store_error(exc, "building a batch")
            return None
        if batch is not None and self._announcing == batch.seq:
            self.keys.announced(batch.seq)
        if newest:
            self._live_credit -= 1.0
            self.stats.live_batches += 1
        if batch is None or batch.rows < limit:
            self._live_credit = 0.0  # caught up: no backlog to interleave with
        return batch

    def _may_send(self) -> bool:
        """Token bucket: refill at the rate, hold at most one second's worth; a publish may overdraw it."""
        rate = self.config.max_bytes_per_second
        if not rate:
            return True
        now = time.monotonic()
        self._allowance = min(float(rate), self._allowance + (now - self._refilled) * rate)
        self._refilled = now
        if self._allowance > 0:
            return True
        self.stats.throttled += 1
        self._loop.call_later(-self._allowance / rate, self._wake.set)
        return False

    def _encode(self, content: BatchContent, seq: int, prev_hash: bytes) -> bytes:
        """Runs inside the store's transaction: seq 1 of an epoch leads with its chain_reset, and the batch
        after `gatewayd keygen --rotate` ends with the key_rotation announcement."""
        created_ms = time.time_ns() // 1_000_000
        events = list(content.events)
        if seq == 1 and self._reset is not None:
            events.insert(0, self._reset)
        announcement = self.keys.announcement(self.gateway_id)
        if announcement is not None:
            events.append(announcement)
            self._announcing = seq
        if len(events) != len(content.events):
            content = BatchContent(content.samples, content.tag_names, events)
        envelope = encode_batch(content, gateway_id=self.gateway_id, boot_id=self.boot_id, seq=seq,
                                prev_hash=prev_hash, created_ms=created_ms, private_key=self.keys.signer,
                                epoch=self.epoch)
        if self.on_built is not None:
            self.on_built(content.samples, created_ms / 1000.0)
        return envelope

    def _publish(self, batch: Batch) -> bool:
        info = self._client.publish(self.topic, batch.envelope, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("publish of batch %d not accepted by the client (rc %d)", batch.seq, info.rc)
            if batch.seq not in self._inflight:
                self._unsent.appendleft(batch)
            return False
        self._by_mid[info.mid] = batch.seq
        self._inflight[batch.seq] = _InFlight(batch, info.mid, time.monotonic())
        self.stats.batches_published += 1
        self.stats.bytes_published += len(batch.envelope)
        self._allowance -= len(batch.envelope)
        return True

    def _heartbeat(self) -> None:
        """Every `heartbeat` seconds while connected: the signed head of the chain (docs/uplink.md#heartbeat),
        and the marker beside the database brought up to that head (gatewayd.uplink.epoch)."""
        now = time.monotonic()
        if not self.stats.connected or now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.heartbeat
        head = self.store.chain_head()
        waiting = [flight.batch.seq for flight in self._inflight.values()] + [batch.seq for batch in self._unsent]
        payload = encode_heartbeat(gateway_id=self.gateway_id, epoch=head.epoch, boot_id=self.boot_id,
                                   head_seq=head.seq, head_hash=head.digest, created_ms=time.time_ns() // 1_000_000,
                                   private_key=self.keys.signer, interval=self.config.heartbeat,
                                   oldest_unacknowledged=min(waiting, default=None))
        if self._client.publish(self.heartbeat_topic, payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS:
            self.stats.heartbeats += 1
        self._write_marker()

    def _write_marker(self) -> None:
        try:
            write_marker(marker_path(self.store.path), self.store.chain_head())
        except (OSError, sqlite3.Error) as exc:
            log.warning("could not write the chain marker beside the store: %s", exc)

    @property
    def inflight(self) -> int:
        return len(self._inflight)


def new_boot_id() -> bytes:
    return os.urandom(16)
