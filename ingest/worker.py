"""One ingest worker: an MQTT v5 shared subscription feeding the Acceptor, acknowledging after commit.

Every worker of a deployment subscribes to `$share/<group>/<prefix>/+/batch` and `.../+/heartbeat`, so
the broker hands each batch and heartbeat to one of them. The session is persistent (fixed client id,
clean_start false, a long session expiry) and the subscription QoS 1, and paho's automatic
acknowledgement is off (`manual_ack`): a batch is acknowledged only once the transaction that stored it
(or recorded why it was dropped) has committed. A worker killed before that leaves the batch
unacknowledged in its session, and the broker delivers it again when the worker's client id connects
again; the chain state in PostgreSQL makes the second delivery a no-op.

paho delivers in its network thread; messages go through a queue to the main thread, which takes what has
arrived (up to `max_group`) and stores it in one transaction: under load the groups grow and a commit is
paid once per group, idle the latency is one transaction.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.accept import TOPIC_KINDS, Acceptor, Message, Outcome
from ingest.findings import Finding, Kind
from ingest.metrics import Metrics
from ingest.schema import migrate

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1, 2, 5)  # seconds between attempts while the database is unreachable
GAP_SWEEP_INTERVAL = 10.0  # seconds between looks for gaps open too long


@dataclass(frozen=True)
class WorkerConfig:
    database: str
    broker_host: str
    broker_port: int
    client_id: str
    group: str = "gatewayd-ingest"
    topic_prefix: str = "gatewayd"
    session_expiry: int = 7 * 86400
    receive_maximum: int = 200
    max_group: int = 200
    late_after: float = 60.0
    gap_alert_after: float = 135.0  # uplink.ack_timeout + 2 x uplink.heartbeat with the gateway's defaults
    lost_alert_after: float = 10.0  # grace for a batch still on its way through another worker
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_plain: bool = False

    @property
    def subscriptions(self) -> list[str]:
        """The batch and heartbeat topics of every gateway, shared by the group."""
        return [f"$share/{self.group}/{self.topic_prefix}/+/{kind}" for kind in TOPIC_KINDS]


class Worker:
    def __init__(self, config: WorkerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._stop = threading.Event()
        self._acceptor: Acceptor | None = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                   protocol=mqtt.MQTTv5, manual_ack=True)
        if not config.insecure_plain:
            self._client.tls_set(ca_certs=str(config.ca_file) if config.ca_file else None,
                                 certfile=str(config.cert_file) if config.cert_file else None,
                                 keyfile=str(config.key_file) if config.key_file else None,
                                 cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Connect, then store and acknowledge until `stop`; a group in hand when stopping is finished first."""
        self._connect_database()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry
        properties.ReceiveMaximum = self.config.receive_maximum
        self._client.connect_async(self.config.broker_host, self.config.broker_port, keepalive=30,
                                   clean_start=False, properties=properties)
        self._client.loop_start()
        next_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                group = self._take()
                if group:
                    self._store(group)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + GAP_SWEEP_INTERVAL
                    self._sweep_gaps()
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _take(self) -> list[Message]:
        try:
            group = [self._inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(group) < self.config.max_group:
            try:
                group.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return group

    def _store(self, group: list[Message]) -> None:
        """Store the group, retrying while the database is away; then acknowledge every message of it but
        those deferred (their gateway was another worker's at the moment), which go back in the queue."""
        attempt = 0
        while True:
            try:
                outcomes = self._process(group)
                break
            except psycopg.OperationalError as exc:
                self.metrics.database_errors.inc()
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                log.warning("database error, retrying %d batches in %.1f s: %s", len(group), delay, exc)
                attempt += 1
                time.sleep(delay)
                self._reconnect_database()
        done = [outcome for outcome in outcomes if not outcome.deferred]
        for outcome in done:
            self._client.ack(outcome.message.mid, 1)
        self.metrics.pending.dec(len(done))
        self.metrics.count(done)
        for outcome in outcomes:
            if outcome.deferred:  # its gateway was locked by another worker: try again with the next group
                self._inbox.put(outcome.message)
        if not done:
            time.sleep(0.01)

    def _sweep_gaps(self) -> None:
        try:
            findings = self._acceptor.alert_overdue_gaps(self.config.gap_alert_after, self.config.lost_alert_after)
        except psycopg.OperationalError as exc:
            log.warning("database error while looking for overdue gaps: %s", exc)
            self._reconnect_database()
            return
        for finding in findings:
            self.metrics.findings.labels(finding.kind.label).inc()

    def _process(self, group: list[Message]) -> list[Outcome]:
        """One transaction for the group; a message the database refuses (a value it cannot hold) is retried
        alone, and one that fails alone is recorded as a bad body, so it never blocks the rest."""
        try:
            return self._acceptor.process(group)
        except psycopg.DataError as exc:
            if len(group) > 1:
                return [outcome for message in group for outcome in self._process([message])]
            message = group[0]
            finding = Finding(Kind.BAD_BODY, None, None, None, f"on {message.topic}: the database refused it: {exc}")
            self._acceptor.record([finding])
            return [Outcome(message, findings=[finding])]

    def _connect_database(self) -> None:
        conn = psycopg.connect(self.config.database)
        migrate(conn)
        ddl = psycopg.connect(self.config.database, autocommit=True)
        self._acceptor = Acceptor(conn, ddl, self.config.client_id, late_after=self.config.late_after)

    def _reconnect_database(self) -> None:
        self._acceptor.close()
        try:
            self._connect_database()
        except psycopg.OperationalError as exc:
            log.warning("database still unreachable: %s", exc)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        log.info("connected to %s:%s as %s (session present: %s), subscribing to %s", self.config.broker_host,
                 self.config.broker_port, self.config.client_id, flags.session_present,
                 ", ".join(self.config.subscriptions))
        client.subscribe([(topic, 1) for topic in self.config.subscriptions])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if all(not code.is_failure for code in reason_codes):
            log.info("subscribed to %s", ", ".join(self.config.subscriptions))
        else:
            log.error("subscription to %s refused: %s", ", ".join(self.config.subscriptions), reason_codes)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._stop.is_set():
            log.warning("disconnected from the broker: %s; reconnecting", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        self.metrics.pending.inc()
        self._inbox.put(Message(message.topic, bytes(message.payload), message.mid))
