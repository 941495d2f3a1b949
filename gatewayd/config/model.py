"""The validated configuration as frozen objects: what the daemon is built from.

Nothing here parses YAML; `gatewayd.config.load` builds these only when every check has passed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.schema import ConfigIssue
from gatewayd.systemd import Credential
from core.yamlload import SourceFile
from rules.model import RulesConfig, TagAlarmConfig


@dataclass(frozen=True)
class TagConfig:
    """One process value and the metadata that provincial platforms ask for with it."""

    name: str
    device: str
    address: Any
    line: int = 0
    description: str = ""
    unit: str = ""
    range_low: float | None = None
    range_high: float | None = None
    target_code: str = ""
    equipment_code: str = ""
    hazard_source_code: str = ""
    production_unit: str = ""
    deadband: float = 0.0
    max_interval: float = 60.0
    stale_after: float = math.inf  # not refreshed this long: STALE (inf: never, as the scan-written IL.* rows)
    report: str = "exception"  # or "every_read": every completed read stored once (gatewayd.values.readlog)
    alarms: TagAlarmConfig | None = None  # limit alarms (rules.config.parse_tag_alarms)
    frozen_after: float | None = None  # seconds unchanged before the value counts as frozen; None: off
    max_rate: float | None = None  # engineering units per second a real value can move; None: off

    def metadata(self) -> dict[str, Any]:
        """The descriptive fields that travel upstream with the tag, empty ones left out."""
        fields = {
            "description": self.description,
            "unit": self.unit,
            "range": [self.range_low, self.range_high] if self.range_low is not None else None,
            "target_code": self.target_code,
            "equipment_code": self.equipment_code,
            "hazard_source_code": self.hazard_source_code,
            "production_unit": self.production_unit,
            "device": self.device,
        }
        return {key: value for key, value in fields.items() if value not in ("", None)}


@dataclass(frozen=True)
class DeviceConfig:
    """A device and its tags; `settings` is the driver's own frozen settings object."""

    name: str
    driver: str
    poll_interval: float
    timeout: float
    settings: Any
    tags: tuple[TagConfig, ...]
    line: int = 0


@dataclass(frozen=True)
class GatewayIdentity:
    id: str
    name: str = ""
    plant: str = ""
    scan_interval: float = 1.0
    state_dir: Path = Path("/var/lib/gatewayd")
    cache_dir: Path = Path("/var/cache/gatewayd")
    runtime_dir: Path = Path("/run/gatewayd")


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    synchronous: str = "full"
    max_bytes: int = 1 << 30  # disk budget of the outbox (store.retention)
    thinning: float = 0.0  # seconds: keep one sample per tag per this much before evicting; 0 evicts


@dataclass(frozen=True)
class HistoryConfig:
    """The `history:` section: how long and how much the store keeps after acknowledgement (store.keeping)."""

    keep: float = 30 * 86400.0  # seconds; 0 keeps none
    max_bytes: int = 4 << 30


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus endpoint listens, a TCP address or a Unix socket; absent means no endpoint."""

    host: str | None
    port: int | None
    socket: Path | None = None  # a Unix socket (under gateway.runtime_dir unless absolute) instead of host:port

    def where(self) -> str:
        return f"unix:{self.socket}" if self.socket is not None else f"http://{self.host}:{self.port}/metrics"


# connections a server accepts in one turn of the event loop (its listen backlog) before it looks at them:
# for that moment they hold descriptors even if they are then refused, so the descriptor reserve must be
# larger than the bursts of both servers (control socket, metrics) together
ACCEPT_BURST = 64
MIN_RESERVE = 2 * ACCEPT_BURST + 32


@dataclass(frozen=True)
class LimitsConfig:
    """The `limits:` section: what local peers may hold of the daemon (gatewayd.peerlimits)."""

    control_connections: int = 32
    control_connections_per_account: int = 8
    control_idle_timeout: float = 60.0
    control_request_bytes: int = 65536
    control_request_depth: int = 32
    metrics_connections: int = 8
    metrics_header_timeout: float = 5.0
    metrics_request_bytes: int = 8192
    reserved_descriptors: int = 256
    refusal_log_interval: float = 60.0


@dataclass(frozen=True)
class UplinkConfig:
    host: str
    port: int
    transport: str
    tls: TlsConfig
    topic_prefix: str
    client_id: str
    username: str | None
    password_file: Path | Credential | None
    signing_key: Path | Credential
    keepalive: float = 30.0
    batch_max_rows: int = 5000
    max_inflight: int = 4
    ack_timeout: float = 15.0
    heartbeat: float = 60.0  # seconds between signed heartbeats (uplink protocol 1.1)
    live_share: float = 0.2  # during a backfill, this share of batches carries the newest rows
    max_bytes_per_second: int | None = None  # upstream rate limit; None: unlimited

    def topic(self, gateway_id: str) -> str:
        return f"{self.topic_prefix}/{gateway_id}/batch"

    def heartbeat_topic(self, gateway_id: str) -> str:
        return f"{self.topic_prefix}/{gateway_id}/heartbeat"


@dataclass(frozen=True)
class DataQualityConfig:
    """The `data_quality:` section: how often the figures go upstream (gatewayd.values.dataquality)."""

    interval: float = 3600.0


@dataclass(frozen=True)
class ControlConfig:
    """The `control:` section: which groups hold which role on the control socket (gatewayd.operator.access), and
    how long a request waits for its approval."""

    view_group: str = "gatewayd-view"
    operator_group: str = "gatewayd-operator"
    approver_group: str = "gatewayd-approver"
    approval_window: float = 3600.0  # seconds a bypass or highly managed alarm request may wait for approval


@dataclass(frozen=True)
class ConsoleConfig:
    """The `console:` section: where `gatewayd console` listens and what it lets a browser hold
    (gatewayd.console). Off loopback it needs TLS and a login (the parse refuses it otherwise)."""

    host: str = "127.0.0.1"
    port: int = 8780
    cert_file: Path | None = None
    key_file: Path | None = None
    users_file: Path | None = None  # `gatewayd console-user` writes it; a login is asked when it is set
    poll_interval: float = 1.0
    connections: int = 32
    connections_per_address: int = 8
    header_timeout: float = 10.0
    request_bytes: int = 8192
    session_lifetime: float = 8 * 3600.0
    login_failures: int = 5
    login_lockout: float = 300.0

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"


@dataclass(frozen=True)
class Config:
    file: Path
    gateway: GatewayIdentity
    devices: tuple[DeviceConfig, ...]
    store: StoreConfig
    uplink: UplinkConfig
    tags: tuple[TagConfig, ...] = field(default=())
    rules: RulesConfig = field(default_factory=RulesConfig)  # the `rules:` section (docs/rules.md)
    metrics: MetricsConfig | None = None  # the `metrics:` section: the Prometheus endpoint, off when absent
    warnings: tuple[ConfigIssue, ...] = ()  # valid but unusual settings: check-config and the daemon show them
    data_quality: DataQualityConfig = field(default_factory=DataQualityConfig)
    sources: tuple[SourceFile, ...] = ()  # every file the parse read, the main file first (yamlload)
    limits: LimitsConfig = field(default_factory=LimitsConfig)  # the `limits:` section (gatewayd.peerlimits)
    control: ControlConfig = field(default_factory=ControlConfig)  # roles on the control socket
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # the `console:` section (gatewayd console)
    history: HistoryConfig = field(default_factory=HistoryConfig)  # the `history:` section (store.keeping)

    @property
    def config_sha256(self) -> str:
        """What `config_sha256` upstream says (docs/uplink.md): the main file's own SHA-256 when the parse
        read nothing else, else the SHA-256 of the files' SHA-256s, one hex digest and a newline each, in
        `sources` order (`sha256sum main.yaml profile.yaml | cut -c1-64 | sha256sum`)."""
        if len(self.sources) == 1:
            return self.sources[0].sha256
        return hashlib.sha256("".join(f"{source.sha256}\n" for source in self.sources).encode()).hexdigest()

    def source_list(self) -> list[dict[str, str]]:
        """`config_files` upstream: each file read, in order, with its SHA-256."""
        return [{"path": str(source.path), "sha256": source.sha256} for source in self.sources]

    def tag_names(self) -> list[str]:
        return [tag.name for tag in self.tags]


def interlock_tags(rules: RulesConfig) -> tuple[TagConfig, ...]:
    """One virtual tag per interlock, `IL.<id>`: 1.0 in service, 0.0 bypassed, bad quality while its
    status tags are bad. No driver reads it; the scan writes it."""
    return tuple(TagConfig(name=il.state_tag, device="", address=None, line=il.line,
                           description=f"in-service state of interlock {il.id} (1 in service, 0 bypassed)",
                           range_low=0.0, range_high=1.0, production_unit=il.unit)
                 for il in rules.interlocks)


def point_tags(config: Config) -> tuple[TagConfig, ...]:
    """The point table's rows: the devices' tags, then one virtual tag per interlock."""
    return config.tags + interlock_tags(config.rules)
