"""OPC UA driver runtime: one task per server owns one session, its subscription and its polls. Read-only.

A session lives from connect to the first sign of trouble, then is thrown away whole and built anew
(new secure channel, new session, new subscription), so no state of a dead session can linger:

- tags in mode subscribe become monitored items of one subscription (sampling interval, queue size,
  deadband filter per tag); items the server refuses, and every tag if it refuses subscriptions,
  are read with the tags in mode poll, in batches every `poll_interval`;
- each value's status code becomes its quality (`status.quality_of`) and its source timestamp is
  kept; values that are not finite numbers are marked, never raised (`values.to_float`);
- the session counts as lost when asyncua reports the connection lost, the server reports a
  subscription status change (timeout, shutdown), a poll fails, or the watchdog sees neither data
  nor keep-alive for `settings.watchdog` seconds (a frozen or half-open server). All the device's
  rows then become COMM_FAILURE at once, one `device_down` event starts the outage, and reconnects
  back off exponentially; the first data of a new session ends it with one `device_up` event;
- with security, the server certificate is checked against the trust store before anything
  else is sent, and again when the session is created (`trust.py`).
- messages from the server are bounded in size and chunks whatever it acknowledges, and a chunk
  announcing more is refused before it is buffered (`transport.py`); a refusal rebuilds the session.

asyncua's own auto-reconnect is not used (it would resume behind the driver's back), nor its stale
subscription watchdog: recreating the subscription resets `last_publish_at`, the time of the latest
publish (data or keep-alive) on which the driver's watchdog and the tags' freshness rest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription
from asyncua.common.utils import ServiceError
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from drivers.kit import Backoff, DeviceHealth, DriverStats, Problems
from drivers.opcua.config import OpcUaNode, OpcUaSettings, subscribed_staleness
from drivers.opcua.status import quality_of, status_name
from drivers.opcua.transport import TransportGuard
from drivers.opcua.trust import TrustStoreError, UntrustedServer, check_server_certificate, load_trust_store
from drivers.values import NAN, describe, to_float, unix_seconds
from core.types import Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.opcua")

UNKNOWN_NAMESPACE = 65535  # the index given to an nsu= URI the server does not list: no server uses it
CREDENTIAL_REJECTED = {ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenRejected,
                       ua.StatusCodes.BadIdentityTokenInvalid, ua.StatusCodes.BadUserSignatureInvalid}
EXACT_INTEGERS = 2 ** 53  # the largest magnitude up to which a double holds every integer (Int64, UInt64)
DEFAULT_LIMIT = 1000  # nodes per Read and items per CreateMonitoredItems when the server names no limit
LIMIT_NODES = {  # the server's operation limits the driver keeps to, read at each connect
    "read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "create": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}
DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


@dataclass
class OpcUaStats(DriverStats):
    """The kit's figures (`polls` are poll rounds answered, `reconnects` sessions after the first) and the
    subscription's: values written, data changes received, sessions, sessions dropped for silence, and
    tags read by polling in the current session (refused monitored items included)."""

    values: int = 0
    notifications: int = 0
    sessions: int = 0
    watchdog_trips: int = 0
    polled_items: int = 0


class SessionLost(Exception):
    """The session stopped working: connection lost, subscription dead, or a request not answered."""


class OpcUaDriver:
    """Reads one OPC UA server into a SampleSink.

    Figures for metrics and benchmarks in `stats` (`OpcUaStats`); `failures` counts failed connects
    and lost sessions.
    """

    def __init__(self, name: str, settings: OpcUaSettings, poll_interval: float, timeout: float,
                 nodes: Sequence[OpcUaNode], rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.poll_interval, self.timeout = poll_interval, timeout
        self.nodes = tuple(nodes)
        self.rows = np.asarray(rows, dtype=np.intp)
        self.stats = OpcUaStats()
        self.health = DeviceHealth(name, {"endpoint": settings.endpoint}, log,
                                   label=f"device {name} ({settings.endpoint})")
        self._problems = Problems(log, f"device {name}")
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._alive_at = 0.0
        self._warned: set[tuple[int, str]] = set()  # (tag index, problem) already logged as a warning
        # (tag index, value, quality, source ts, read at): read at is the monotonic time the value arrived
        self._pending: list[tuple[int, float, int, float, float]] = []
        self._flush_scheduled = False
        self._sink: SampleSink | None = None
        self._granted = settings  # the subscription settings the server granted in the current session
        self._limits = dict.fromkeys(LIMIT_NODES, DEFAULT_LIMIT)  # operations per request, by service
        self._configured_ids = [ua.NodeId.from_string(node.node) for node in self.nodes]
        self._node_ids = list(self._configured_ids)  # with nsu= resolved for the current session
        self._transport: TransportGuard | None = None  # the current session's message bounds

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> OpcUaDriver:
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        return cls(device.name, device.settings, device.poll_interval, device.timeout,
                   [tag.address for tag in device.tags], rows)

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        """Connect, read and reconnect until cancelled."""
        self._sink = sink
        while True:
            rejected = await self._session(sink)
            await asyncio.sleep(self.settings.credential_backoff if rejected else self._backoff.next())

    async def _session(self, sink: SampleSink) -> bool:
        """One session from connect to its loss. The loss is declared (rows COMM_FAILURE, `device_down`)
        the moment it is seen, before the polite close, which may wait `timeout` on a frozen server.
        Returns whether the server rejected the credentials."""
        client = Client(self.settings.endpoint, timeout=self.timeout, watchdog_intervall=max(1.0, self.timeout))
        client.name = client.description = f"gatewayd {self.name}"
        client.session_timeout = int(self.settings.session_timeout * 1000)
        # asyncua's stale-subscription watchdog would recreate a silent subscription and reset its
        # last_publish_at, making a frozen server look alive to ours and fresh to staleness: switch it off
        client._stale_check_margin = math.inf
        self._transport = TransportGuard(self.settings.max_message_size, self.settings.max_chunk_count)
        self._transport.install(client)
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def connection_lost(exc: Exception) -> None:
            if not lost.done():
                lost.set_result(f"connection lost ({_cause(exc)})")

        client.connection_lost_callback = connection_lost
        connected = False
        tasks: list[asyncio.Task] = []
        try:
            await self._secure(client)
            async with asyncio.timeout(5 * self.timeout):
                await client.connect()
            connected = True
            await self._read_limits(client)
            await self._resolve_namespaces(client)
            subscribed, polled = await self._subscribe(client)
            self.stats.reconnects += self.stats.sessions > 0
            self.stats.sessions += 1
            self._alive_at = time.monotonic()
            if subscribed is not None:
                tasks.append(asyncio.create_task(self._consume(subscribed, lost)))
            if polled.size:
                tasks.append(asyncio.create_task(self._poll(client, polled)))
            tasks.append(asyncio.create_task(self._watch(subscribed, np.delete(self.rows, polled), lost)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
            raise SessionLost("session ended")
        except (UntrustedServer, TrustStoreError, SessionLost) as exc:
            self._device_down(sink, str(exc))
        except (OSError, TimeoutError, ConnectionError, ua.UaError, ServiceError) as exc:
            if getattr(exc, "code", None) in CREDENTIAL_REJECTED:
                self._device_down(sink, f"credentials rejected ({_cause(exc)})")
                log.warning("device %s: the server rejected the credentials of %s (%s); next attempt in %g s "
                            "(credential_backoff), so that repeated failures do not lock the account",
                            self.name, self.settings.username or "the anonymous user", _cause(exc),
                            self.settings.credential_backoff)
                return True
            self._device_down(sink, _cause(exc))
        except Exception as exc:  # noqa: BLE001 - a surprise from the stack must not end the polling
            self._device_down(sink, _cause(exc))
            log.debug("device %s: unexpected error", self.name, exc_info=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close(client, connected)
        return False

    async def _secure(self, client: Client) -> None:
        await secure_session(client, self.settings, self.timeout, f"device {self.name}")

    async def _subscribe(self, client: Client) -> tuple[Subscription | None, np.ndarray]:
        """Create the subscription and its items; returns it (None if refused) and the tag indexes to poll."""
        polled = [index for index, node in enumerate(self.nodes) if node.mode == "poll"]
        wanted = [index for index, node in enumerate(self.nodes) if node.mode == "subscribe"]
        subscription = None
        if wanted:
            settings = self.settings
            params = ua.CreateSubscriptionParameters()
            params.RequestedPublishingInterval = settings.publishing_interval * 1000
            params.RequestedMaxKeepAliveCount = settings.keepalive_count
            params.RequestedLifetimeCount = max(3 * settings.keepalive_count,
                                                math.ceil(settings.session_timeout / settings.publishing_interval))
            params.MaxNotificationsPerPublish = 0  # no limit
            params.PublishingEnabled = True
            # not client.create_subscription: when the server revises the interval it silently modifies
            # the keep-alive count to 3/4 of the session timeout, and it keeps no revised values
            subscription = Subscription(client.uaclient.session, params, None,
                                        queue_maxsize=4 * len(wanted) + 1000, overflow=OverflowPolicy.DROP_OLDEST)
            try:
                async with asyncio.timeout(2 * self.timeout):
                    revised = await subscription.init()
            except ua.UaStatusCodeError as exc:
                self._problems.note("subscriptions",
                                    f"server refuses subscriptions ({_cause(exc)}); polling every tag")
                subscription = None
                polled += wanted
            else:
                self._revise(revised)
                polled += await self._create_items(subscription, wanted)
        self.stats.polled_items = len(polled)
        return subscription, np.array(sorted(polled), dtype=np.intp)

    def _revise(self, revised: ua.CreateSubscriptionResult) -> None:
        """Take the publishing interval and keep-alive count the server granted: they, not the configured
        ones, say how long a healthy subscription may stay silent (the watchdog) and how long a
        subscribed value stays current (its stale_after, widened through the sink, never shortened)."""
        configured = self.settings
        granted = replace(configured, publishing_interval=revised.RevisedPublishingInterval / 1000,
                          keepalive_count=max(1, revised.RevisedMaxKeepAliveCount))
        if (granted.publishing_interval, granted.keepalive_count) != (configured.publishing_interval,
                                                                       configured.keepalive_count):
            self._problems.note("revised", f"server revised the subscription to a publishing interval of "
                                f"{granted.publishing_interval:g} s and a keep-alive count of "
                                f"{granted.keepalive_count} (asked {configured.publishing_interval:g} s and "
                                f"{configured.keepalive_count}); silence allowed {granted.watchdog:g} s")
        else:
            self._problems.clear("revised", "server granted the configured publishing interval and keep-alive")
        self._granted = granted

    async def _create_items(self, subscription: Subscription, wanted: list[int]) -> list[int]:
        """Monitored items for `wanted` tag indexes (client handle = index + 1); returns those refused."""
        async def create(chunk: list[int]) -> list[Any]:
            async with asyncio.timeout(2 * self.timeout):
                return await subscription.create_monitored_items([self._item_request(i) for i in chunk])

        refused = []
        for index, result in zip(wanted, await self._in_chunks("create", wanted, create)):
            if isinstance(result, ua.StatusCode):
                refused.append(index)
                self._problems.note((index, "refused"), f"server refuses monitored item {self.nodes[index].node} "
                                                        f"({status_name(result.value)}); polling it")
        return refused

    async def _read_limits(self, client: Client) -> None:
        """MaxNodesPerRead and MaxMonitoredItemsPerCall from the server's OperationLimits; a limit the
        server leaves unset (0, missing, unreadable) means the default chunk."""
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(node), AttributeId=ua.AttributeIds.Value)
                              for node in LIMIT_NODES.values()]
        async with asyncio.timeout(self.timeout):
            results = await client.uaclient.read(params)
        for kind, data in zip(LIMIT_NODES, results):
            value = data.Value.Value if data.StatusCode.is_good() and data.Value is not None else None
            self._limits[kind] = value if isinstance(value, int) and 0 < value < DEFAULT_LIMIT else DEFAULT_LIMIT

    async def _resolve_namespaces(self, client: Client) -> None:
        """Node ids written `nsu=URI;...` get the index of URI in the server's NamespaceArray, read anew
        in every session: a restarted server may number its namespaces differently. A URI the server
        does not list gets an index no server uses, so the server itself reports its nodes unknown
        (DEVICE_ERROR), with one warning naming the URI."""
        uris = {node_id.NamespaceUri for node_id in self._configured_ids if _namespace_uri(node_id)}
        if not uris:
            return
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(ua.ObjectIds.Server_NamespaceArray),
                                             AttributeId=ua.AttributeIds.Value)]
        async with asyncio.timeout(self.timeout):
            (data,) = await client.uaclient.read(params)
        data.StatusCode.check()
        array = list(data.Value.Value or [])
        for uri in sorted(uris - set(array)):
            self._problems.note(("namespace", uri), f"server has no namespace {uri} (it has {', '.join(array)}); "
                                                    "its nodes will be reported unknown")
        index = {uri: array.index(uri) for uri in uris if uri in array}
        self._node_ids = [ua.NodeId(node_id.Identifier, index.get(node_id.NamespaceUri, UNKNOWN_NAMESPACE),
                                    node_id.NodeIdType) if _namespace_uri(node_id) else node_id
                          for node_id in self._configured_ids]

    async def _in_chunks(self, kind: str, items: Sequence[Any], call: Any) -> list[Any]:
        """`call` on consecutive chunks of `items` within the server's limit for `kind`, results in order.
        A server that answers BadTooManyOperations anyway (a limit it does not advertise, or advertises
        wrongly) gets the chunk halved and sent again, down to one; the smaller limit is kept for the session."""
        results: list[Any] = []
        while len(results) < len(items):
            size = self._limits[kind]
            chunk = items[len(results):len(results) + size]
            try:
                results.extend(await call(chunk))
            except ua.UaStatusCodeError as exc:
                if exc.code != ua.StatusCodes.BadTooManyOperations or size == 1:
                    raise
                self._limits[kind] = max(1, len(chunk) // 2)
                self._problems.note(("limit", kind), f"server refused {len(chunk)} operations in one {kind} request "
                                    f"(BadTooManyOperations); sending at most {self._limits[kind]}")
        return results

    def _item_request(self, index: int) -> ua.MonitoredItemCreateRequest:
        node = self.nodes[index]
        parameters = ua.MonitoringParameters()
        parameters.ClientHandle = index + 1
        sampling = self.settings.sampling_interval if node.sampling_interval is None else node.sampling_interval
        parameters.SamplingInterval = sampling * 1000
        parameters.QueueSize = node.queue_size
        parameters.DiscardOldest = True
        if node.deadband_type != "none":
            parameters.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                    DeadbandType=DEADBAND_TYPES[node.deadband_type],
                                                    DeadbandValue=node.deadband_value)
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=self._node_ids[index],
                                               AttributeId=ua.AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = parameters
        return request

    async def _consume(self, subscription: Subscription, lost: asyncio.Future[str]) -> None:
        """Data changes into the pending batch; a status change of the subscription ends the session."""
        async for event in subscription:
            if isinstance(event, DataChangeEvent):
                self._alive_at = time.monotonic()
                self.stats.notifications += 1
                self._add(event.data.subscription_data.client_handle - 1, event.data.monitored_item.Value,
                          self._alive_at)
            elif isinstance(event, StatusChangeEvent):
                if lost.done():  # asyncua tells the subscription after the connection went
                    raise SessionLost(lost.result())
                status = status_name(event.notification.Status.value)
                raise SessionLost(f"server reported {status} for the subscription")
        raise SessionLost("subscription closed")

    def _add(self, index: int, data: ua.DataValue | None, read_at: float) -> None:
        """Queue one value that arrived at `read_at`; the batch goes to the sink once the events at hand
        are drained, each value with its own arrival time."""
        if not 0 <= index < len(self.nodes):
            return
        if data is None:
            self._pending.append((index, NAN, int(Quality.NO_VALUE), NAN, read_at))
        else:
            status = data.StatusCode.value if data.StatusCode is not None else 0
            raw = data.Value.Value if data.Value is not None else None
            value, quality = to_float(raw)
            if isinstance(raw, int) and abs(raw) > EXACT_INTEGERS:
                self._problems.note((index, "precision"), f"node {self.nodes[index].node} sent {raw}, beyond 2^53: "
                                    "the uplink's double keeps it only to the nearest representable value")
            status_quality = quality_of(status)
            if status_quality.is_bad:
                quality = status_quality  # the server's reason wins; its value, if any, is kept
            elif not quality.is_good:
                self._problems.note((index, "value"),
                                    f"node {self.nodes[index].node} sent {describe(raw)}, not a finite number")
            else:
                quality = status_quality
            moment = data.SourceTimestamp or data.ServerTimestamp
            self._pending.append((index, value, int(quality), unix_seconds(moment) if moment else NAN, read_at))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not pending or self._sink is None:
            return
        indexes = np.fromiter((item[0] for item in pending), dtype=np.intp, count=len(pending))
        values = np.fromiter((item[1] for item in pending), dtype=np.float64, count=len(pending))
        qualities = np.fromiter((item[2] for item in pending), dtype=np.uint8, count=len(pending))
        stamps = np.fromiter((item[3] for item in pending), dtype=np.float64, count=len(pending))
        read_at = np.fromiter((item[4] for item in pending), dtype=np.float64, count=len(pending))
        self._sink.write(self.rows[indexes], values, qualities, stamps, read_at)
        self.stats.values += len(pending)
        self._backoff.reset()
        self.health.up(self._sink)

    async def _poll(self, client: Client, polled: np.ndarray) -> None:
        """Read the polled tags every poll_interval; a failed read ends the session."""
        node_ids = [self._node_ids[index] for index in polled]

        async def read(chunk: list[ua.NodeId]) -> list[tuple[ua.DataValue, float]]:
            """Each value with the time its chunk's answer arrived."""
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
                                  for node_id in chunk]
            try:
                async with asyncio.timeout(self.timeout):
                    results = await client.uaclient.read(params)
            except TimeoutError as exc:
                raise SessionLost(f"no answer to a read within {self.timeout:g} s") from exc
            arrived = time.monotonic()
            return [(data, arrived) for data in results]

        tick = time.monotonic()
        while True:
            for index, (data, arrived) in zip(polled, await self._in_chunks("read", node_ids, read)):
                self._add(int(index), data, arrived)
            self.stats.polls += 1
            self._alive_at = time.monotonic()
            tick = max(tick + self.poll_interval, time.monotonic())
            await asyncio.sleep(tick - time.monotonic())

    async def _watch(self, subscription: Subscription | None, subscribed: np.ndarray,
                     lost: asyncio.Future[str]) -> None:
        """End the session when asyncua lost the connection or the subscription went silent; while it
        publishes (data or keep-alive), confirm its tags' values as current so they do not turn STALE."""
        limit = self._granted.watchdog
        if subscription is not None and subscribed.size and self._sink is not None:
            self._sink.widen_stale_after(subscribed, subscribed_staleness(self._granted)[1])
        confirmed = 0.0
        while True:
            await asyncio.sleep(min(0.25, limit / 4))
            if lost.done():
                raise SessionLost(lost.result())
            if subscription is None:
                continue
            published = subscription.last_publish_at or 0.0
            if published > confirmed and subscribed.size and self._sink is not None:
                confirmed = published
                self._sink.confirm(subscribed, published)
            last = max(self._alive_at, published)
            if time.monotonic() - last > limit:
                self.stats.watchdog_trips += 1
                raise SessionLost(f"subscription silent: no data and no keep-alive for {limit:g} s")

    async def _close(self, client: Client, connected: bool) -> None:
        """Close the session politely within the timeout, then make sure the socket is closed.

        asyncua's keep-alive probe marks a silent connection DISCONNECTED without closing its transport,
        and its `disconnect()` and `disconnect_socket()` then do nothing: every freeze of the server
        would leave one TCP connection (and the server's secure channel) open for good, until the
        server's connection cap locks out the gateway. So the transport is taken before asyncua can
        forget it and aborted here whatever asyncua's state says.
        """
        protocol = client.uaclient.protocol
        if connected:
            try:
                async with asyncio.timeout(self.timeout):
                    await client.disconnect()
            except (OSError, TimeoutError, ConnectionError, ua.UaError, ServiceError):
                pass
            except Exception:  # noqa: BLE001 - closing a broken session may fail in any way
                log.debug("device %s: error while closing the session", self.name, exc_info=True)
        client.disconnect_socket()
        transport = getattr(protocol, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _device_down(self, sink: SampleSink, cause: str) -> None:
        """A message refused for its size is the cause, whatever symptom asyncua showed first."""
        if self._transport is not None and self._transport.refusal is not None:
            cause = self._transport.refusal
        self.stats.failures += 1
        self._pending.clear()
        sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
        self.health.down(sink, cause, Quality.COMM_FAILURE)


async def secure_session(client: Client, settings: OpcUaSettings, timeout: float, label: str) -> None:
    """Security and identity of a session about to open (the driver's, `gatewayd browse`'s): the server
    certificate is checked against the trust store before any credential is sent, and again by the
    client's validator during the handshake (a refusal is logged under `label`)."""
    if settings.security_policy == "None":
        return
    store = settings.trust_store
    trusted = load_trust_store(store)
    mode = getattr(ua.MessageSecurityMode, settings.security_mode)
    async with asyncio.timeout(3 * timeout):
        endpoints = await client.connect_and_get_server_endpoints()
    try:
        endpoint = Client.find_endpoint(endpoints, mode, SecurityPolicyBasic256Sha256.URI)
    except ua.UaError as exc:
        offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]} {e.SecurityMode.name}" for e in endpoints})
        raise UntrustedServer(f"server offers no endpoint with Basic256Sha256 {settings.security_mode} "
                              f"(it offers: {', '.join(offered)})") from exc
    server_der = _first_certificate(endpoint.ServerCertificate or b"")
    try:
        server_certificate = x509.load_der_x509_certificate(server_der)
    except ValueError as exc:
        raise UntrustedServer(f"server sent no usable certificate ({exc})") from exc
    check_server_certificate(server_certificate, trusted, store)
    client.application_uri = (settings.application_uri or _application_uri(settings.certificate.read_bytes())
                              or client.application_uri)
    await client.set_security(SecurityPolicyBasic256Sha256, str(settings.certificate), str(settings.private_key),
                              server_certificate=server_der, mode=mode)

    async def validate(certificate: x509.Certificate, _description: Any) -> None:
        try:
            check_server_certificate(certificate, trusted, store)
        except UntrustedServer as exc:
            log.warning("%s: %s", label, exc)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted) from exc

    client.certificate_validator = validate
    if settings.username is not None:
        client.set_user(settings.username)
        client.set_password(settings.password_file.read_text(encoding="utf-8").rstrip("\r\n"))


def _namespace_uri(node_id: ua.NodeId) -> str | None:
    """The URI of a node id written `nsu=URI;...`, None for one written with an index."""
    return getattr(node_id, "NamespaceUri", None) or None


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, ServiceError):
        return status_name(exc.code)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_certificate(der: bytes) -> bytes:
    """The leading certificate of a DER chain: the outer SEQUENCE's length says where it ends."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    if der[1] < 0x80:
        return der[:2 + der[1]]
    size = der[1] & 0x7F
    return der[:2 + size + int.from_bytes(der[2:2 + size], "big")]


def _application_uri(data: bytes) -> str | None:
    """The URI in the subjectAltName of a PEM or DER certificate: what servers expect as the client's URI."""
    try:
        load = x509.load_pem_x509_certificate if b"-----BEGIN" in data else x509.load_der_x509_certificate
        certificate = load(data)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
