"""Configuration schema of the OPC UA driver: endpoint, security, subscription and per-tag node settings.

Security fails closed: a device must name its `security_policy` (an unsecured link is chosen with
`None` in writing, as MQTT's `transport: plain` is), a secured endpoint needs a trust store, and a
server certificate that is not in it (or not issued by a certificate in it) is refused. A password
is only ever read from a file and never sent over an endpoint without security. Relative paths are
resolved against the directory of the config file, like the rest of the configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.schema import positive_duration
from core.schema import Field, Invalid, Reader, duration, integer, number, one_of, text

SECURITY_POLICIES = ("None", "Basic256Sha256")
SECURITY_MODES = ("Sign", "SignAndEncrypt")
DEADBAND_TYPES = ("none", "absolute", "percent")
MODES = ("subscribe", "poll")
MAX_QUEUE_SIZE = 10_000
MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # default: a Read of 1,000 nodes or a publish of 10,000 changes is under 1 MB
SMALLEST_CHUNK = 8192  # the smallest buffer OPC UA allows; the default chunk count fits the message in such chunks
# settings holding files with secrets: the gateway refuses them when others can read them (check-config,
# start and reload), since asyncua opens the key itself
SECRET_FILES = {"private_key": "OPC UA client key", "password_file": "OPC UA password file"}
DEFAULT_SAMPLING = 1.0  # seconds, when neither the device's sampling nor its publishing interval is set

# ns=<index>; or nsu=<uri>; then i=<number>, s=<string>, g=<guid> or b=<base64>
_NODE_ID = re.compile(
    r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|b=[A-Za-z0-9+/=]+)$",
    re.DOTALL,
)


def endpoint_url(value: Any) -> str:
    value = text(value)
    if not re.fullmatch(r"opc\.tcp://[^/\s:]+(?::\d{1,5})?(?:/\S*)?", value):
        raise Invalid(f"{value!r} is not an OPC UA endpoint; write e.g. opc.tcp://10.0.0.5:4840")
    return value


def node_id(value: Any) -> str:
    """A node id in the standard string form, checked without loading asyncua."""
    value = text(value)
    if not _NODE_ID.match(value):
        raise Invalid(f"{value!r} is not a node id; write e.g. ns=2;s=Tank.Level or ns=0;i=2258")
    return value


def file_path(value: Any) -> Path:
    return Path(text(value))


@dataclass(frozen=True)
class OpcUaNode:
    """One monitored or polled node and how the server should sample and filter it."""

    node: str
    mode: str = "subscribe"
    sampling_interval: float | None = None  # seconds; None: the device's sampling_interval
    queue_size: int = 1
    deadband_type: str = "none"
    deadband_value: float = 0.0


@dataclass(frozen=True)
class OpcUaSettings:
    endpoint: str
    security_policy: str = "None"
    security_mode: str | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    trust_store: Path | None = None
    application_uri: str | None = None
    username: str | None = None
    password_file: Path | None = None
    publishing_interval: float = 0.5
    sampling_interval: float = 1.0  # for subscribed tags that name none
    keepalive_count: int = 3
    session_timeout: float = 60.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    credential_backoff: float = 600.0
    max_message_size: int = MAX_MESSAGE_SIZE
    max_chunk_count: int = MAX_MESSAGE_SIZE // SMALLEST_CHUNK

    @property
    def watchdog(self) -> float:
        """Seconds without data or keep-alive after which the subscription counts as dead (at least 1 s)."""
        return max(1.0, 2 * self.keepalive_count * self.publishing_interval)


DEVICE_FIELDS = {
    "endpoint": Field(endpoint_url, doc="server endpoint URL, e.g. opc.tcp://10.0.0.5:4840"),
    "security_policy": Field(one_of(*SECURITY_POLICIES), None,
                             "required: Basic256Sha256, or None to accept an unsecured link explicitly"),
    "security_mode": Field(one_of(*SECURITY_MODES), None,
                           "Sign or SignAndEncrypt (default with Basic256Sha256); not allowed with None"),
    "certificate": Field(file_path, None, "client certificate (PEM or DER); required with Basic256Sha256"),
    "private_key": Field(file_path, None, "private key of the client certificate (PEM or DER, unencrypted)"),
    "trust_store": Field(file_path, None, "directory of trusted server or CA certificates (PEM or DER); "
                         "required with Basic256Sha256: a server certificate not in it is refused"),
    "application_uri": Field(text, None, "client application URI; default: the URI in the client certificate"),
    "username": Field(text, None, "user name for a user-name identity token; anonymous if unset"),
    "password_file": Field(file_path, None, "file holding the password (never inline); needs username "
                           "and a secured endpoint"),
    "publishing_interval": Field(positive_duration, None,
                                 "duration: how often the server sends changes; default half the sampling_interval, "
                                 "so that a sampled value waits at most half a sample for its publish"),
    "sampling_interval": Field(positive_duration, None,
                               "duration: server-side sampling of the subscribed tags that set none; default 1 s, "
                               "or the publishing_interval when that is set"),
    "keepalive_count": Field(integer(1, 100), 3,
                             "publishing intervals without change after which the server sends a keep-alive; "
                             "no data and no keep-alive for twice that (at least 1 s) rebuilds the session"),
    "session_timeout": Field(positive_duration, 60.0, "duration: requested session timeout"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 30.0, "longest reconnect delay in seconds"),
    "credential_backoff": Field(positive_duration, 600.0, "duration: wait after the server rejected the "
                                "credentials, so that a server locking accounts after failed logins is not provoked"),
    "max_message_size": Field(integer(65_536, 2**31 - 1), MAX_MESSAGE_SIZE,
                              "bytes: a larger message from the server is refused and the session rebuilt"),
    "max_chunk_count": Field(integer(1, 2**31 - 1), MAX_MESSAGE_SIZE // SMALLEST_CHUNK,
                             "chunks one message from the server may come in; more is refused like a large message"),
}

TAG_FIELDS = {
    "node": Field(node_id, doc="node id, e.g. ns=2;s=Tank.Level or ns=3;i=1001"),
    "mode": Field(one_of(*MODES), "subscribe", "subscribe (monitored item) or poll (read every poll_interval)"),
    "sampling_interval": Field(duration, None, "duration: server-side sampling; default the device's "
                               "sampling_interval, 0 the fastest the server offers"),
    "queue_size": Field(integer(1, MAX_QUEUE_SIZE), 1, "values the server queues between publishes"),
    "deadband_type": Field(one_of(*DEADBAND_TYPES), "none", "data-change filter: none, absolute or percent "
                           "(of the node's EURange)"),
    "deadband_value": Field(number(0.0), 0.0, "deadband of the data-change filter, in units or percent"),
}


NO_POLICY = ("required: write security_policy: Basic256Sha256 (with certificate, private_key and trust_store), "
             "or security_policy: None where an unsecured link to this server is accepted")


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> OpcUaSettings | None:
    """Cross-field rules of security and credentials; paths resolved against the config file's directory."""
    if values["security_policy"] is None:
        reader.error(line, f"{path}.security_policy", NO_POLICY)
        return None
    problems: list[tuple[str, str]] = []
    secured = values["security_policy"] != "None"
    if secured:
        values["security_mode"] = values["security_mode"] or "SignAndEncrypt"
        for key in ("certificate", "private_key", "trust_store"):
            if values[key] is None:
                problems.append((key, f"required with security_policy {values['security_policy']}"))
    else:
        if values["security_mode"] is not None:
            problems.append(("security_mode", "security_mode needs security_policy Basic256Sha256"))
        if values["trust_store"] is not None:
            problems.append(("trust_store", "a trust store needs security_policy Basic256Sha256"))
    if (values["certificate"] is None) != (values["private_key"] is None):
        problems.append(("private_key", "certificate and private_key go together"))
    if values["password_file"] is not None:
        if values["username"] is None:
            problems.append(("password_file", "a password needs a username"))
        if not secured:
            problems.append(("password_file", "the password would cross the network in clear with security_policy "
                             "None; use Basic256Sha256"))
    elif values["username"] is not None:
        problems.append(("username", "a username needs password_file"))
    values["publishing_interval"], values["sampling_interval"] = default_rates(values["publishing_interval"],
                                                                               values["sampling_interval"])
    if values["backoff_max"] < values["backoff_initial"]:
        problems.append(("backoff_max", "backoff_max must be at least backoff_initial"))
    for key, message in problems:
        reader.error(line, f"{path}.{key}", message)
    if problems:
        return None
    base = Path(reader.file).resolve().parent
    for key in ("certificate", "private_key", "trust_store", "password_file"):
        if values[key] is not None:
            values[key] = base / values[key]
    return OpcUaSettings(**values)


def default_rates(publishing: float | None, sampling: float | None) -> tuple[float, float]:
    """(publishing interval, sampling interval) from what the integrator set, either possibly None.

    A value sampled at a random moment waits for the next publish, up to one publishing interval, so
    by default the server publishes twice per sample: the gateway's time stays within half a sample
    of the source time, for more publish responses but no more sampling. An integrator who sets only
    the publishing interval gets it as the sampling interval too, as before this default existed.
    """
    if publishing is None:
        sampling = DEFAULT_SAMPLING if sampling is None else sampling
        return sampling / 2, sampling
    return publishing, publishing if sampling is None else sampling


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> OpcUaNode | None:
    problems = []
    if values["deadband_type"] == "none" and values["deadband_value"] != 0.0:
        problems.append("deadband_value needs deadband_type absolute or percent")
    if values["deadband_type"] == "percent" and values["deadband_value"] > 100.0:
        problems.append(f"a percent deadband is 0-100, not {values['deadband_value']:g}")
    if values["mode"] == "poll" and (values["deadband_type"] != "none" or values["queue_size"] != 1
                                     or values["sampling_interval"] is not None):
        problems.append("sampling_interval, queue_size and deadband apply to mode subscribe only")
    for problem in problems:
        reader.error(line, path, problem)
    return None if problems else OpcUaNode(**values)


def staleness(poll_interval: float, settings: OpcUaSettings, address: OpcUaNode) -> tuple[float, float]:
    """(longest gap between two refreshes of a healthy tag, default stale_after).

    A polled tag is refreshed every poll interval and turns STALE after three. A subscribed tag is
    refreshed by every publish of its subscription, data or keep-alive: the server sends one at least
    every keepalive_count publishing intervals, so one publishing interval more without either makes
    it STALE, before the watchdog (twice the keep-alive period) declares the server down.
    """
    if address.mode == "poll":
        return poll_interval, 3 * poll_interval
    return subscribed_staleness(settings)


def subscribed_staleness(settings: OpcUaSettings) -> tuple[float, float]:
    """`staleness` of a subscribed tag; the driver asks it again with the publishing interval and
    keep-alive count the server granted, which may be longer than the configured ones."""
    keepalive = settings.keepalive_count * settings.publishing_interval
    return keepalive, keepalive + settings.publishing_interval


def check_tags(tags: list[tuple[str, str, int, OpcUaNode]], reader: Reader) -> None:
    """Reject two tags of one device that read the same node: almost always a copy-and-paste slip."""
    seen: dict[str, str] = {}
    for name, path, line, address in tags:
        if address.node in seen:
            reader.error(line, f"{path}.node", f"node {address.node} is already read by tag {seen[address.node]}")
        else:
            seen[address.node] = name
