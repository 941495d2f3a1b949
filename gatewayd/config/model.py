"""The validated configuration as frozen objects: what the daemon is built from.

Nothing here parses YAML; `gatewayd.config.load` builds these only when every check has passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AlarmLimits:
    """Analog limit alarms of one tag, in engineering units. A limit that is None is not configured.

    The alarm returns only when the value is back past the limit by `deadband` (ISA-18.2).
    """

    hh: float | None = None
    h: float | None = None
    l: float | None = None  # noqa: E741 - the standard's own name for the low limit
    ll: float | None = None
    deadband: float = 0.0
    priority: str = "medium"


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
    alarms: AlarmLimits | None = None

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


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class UplinkConfig:
    host: str
    port: int
    transport: str
    tls: TlsConfig
    topic_prefix: str
    client_id: str
    username: str | None
    password_file: Path | None
    signing_key: Path
    keepalive: float = 30.0
    batch_max_rows: int = 5000
    max_inflight: int = 4
    ack_timeout: float = 15.0

    def topic(self, gateway_id: str) -> str:
        return f"{self.topic_prefix}/{gateway_id}/batch"


@dataclass(frozen=True)
class Config:
    file: Path
    gateway: GatewayIdentity
    devices: tuple[DeviceConfig, ...]
    store: StoreConfig
    uplink: UplinkConfig
    tags: tuple[TagConfig, ...] = field(default=())

    def tag_names(self) -> list[str]:
        return [tag.name for tag in self.tags]
