"""One assembly: the running pieces of the daemon, built from a validated `Config`.

Start-up (`gatewayd.daemon.Daemon`) and reload (`gatewayd.reload`) build with these same functions, so
a reloaded configuration runs exactly as it would after a restart:

- `open_store`: the SQLite store with its disk budget and its history's keep and bound;
- `build_points`: the point table (every tag, and one row per interlock), the rule engine over it and
  the scanner with its data-quality accumulator;
- `build_outbox`: what the scan appends to: the clock guard over the spill over the store (a reload
  hands the running one to its new scanner, with the tail's tap);
- `build_driver` and `device_sink`: a device's driver, writing to positions 0..n-1 of its own tags,
  and the sink that maps those onto point-table rows;
- `check_secrets`: every secret file of the config refused when loose or missing, as check-config does;
- `publisher_factory`: the uplink's secrets and signing key, loaded now (a missing one fails here,
  before anything runs), and a function that builds the publisher over the store;
- `metadata_events`: the `tag_metadata` events that describe tags upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import drivers
from gatewayd.config.model import Config, DeviceConfig, TagConfig, UplinkConfig, point_tags
from gatewayd.keys import load_next_key, load_private_key
from gatewayd.secretfiles import refuse_loose
from gatewayd.systemd import secret_path
from core.types import Event, Priority
from gatewayd.uplink.publisher import Publisher
from gatewayd.values.clock import ClockGuard
from gatewayd.values.points import PointTable
from gatewayd.values.scan import Scanner, build_data_quality, build_engine
from gatewayd.values.sink import DeviceSink
from rules.engine import RuleEngine
from store import Keeping, Retention, Store
from store.outbox import BLOCK_SAMPLES
from store.spill import Spill

METADATA_CHUNK = 500  # tags described per tag_metadata event
PublisherFactory = Callable[[Store], Publisher]


@dataclass
class Points:
    """The value path of one configuration: its point table, the rule engine over it, its scanner."""

    table: PointTable
    engine: RuleEngine
    scanner: Scanner


def open_store(config: Config) -> Store:
    """The store; its blocks no larger than a batch, which carries whole blocks."""
    return Store.open(config.store.path, config.store.synchronous,
                      Retention(config.store.max_bytes, config.store.thinning),
                      Keeping(config.history.keep, config.history.max_bytes),
                      min(BLOCK_SAMPLES, config.uplink.batch_max_rows))


def build_points(config: Config, store: Store) -> Points:
    """A new point table, rule engine and scanner; nothing runs yet and no state is restored."""
    table = PointTable(point_tags(config))
    engine = build_engine(config, table)
    scanner = Scanner(table, store.tag_ids([tag.name for tag in table.tags]), store, engine,
                      build_data_quality(config, table, time.monotonic(), time.time()))
    return Points(table, engine, scanner)


def build_outbox(store: Store) -> tuple[Spill, ClockGuard]:
    """The spill (a full disk stops storing, never scanning) and the clock guard the scan appends to."""
    spill = Spill(store)
    return spill, ClockGuard(spill)


def build_driver(device: DeviceConfig) -> Any:
    """The runtime driver of a device, writing to positions 0..n-1 of its tags (see DeviceSink)."""
    return drivers.create(device, np.arange(len(device.tags), dtype=np.int64))


def device_sink(device: DeviceConfig, table: PointTable) -> DeviceSink:
    return DeviceSink(table, table.rows_of([tag.name for tag in device.tags]))


def resolve_uplink(uplink: UplinkConfig) -> UplinkConfig:
    """Secrets given as credential:NAME are files in $CREDENTIALS_DIRECTORY while the service runs."""
    return replace(uplink, signing_key=secret_path(uplink.signing_key),
                   password_file=uplink.password_file and secret_path(uplink.password_file))


def secret_files(config: Config, uplink: UplinkConfig) -> list[tuple[str, Path | None]]:
    """(what, path) of every file of the config that holds a secret, `uplink` with its credentials resolved:
    start and reload refuse them when loose (`gatewayd.secretfiles`), as check-config does."""
    files = [("signing key", uplink.signing_key), ("broker password file", uplink.password_file),
             ("MQTT client key", uplink.tls.key_file)]
    for device in config.devices:
        for key, what in getattr(drivers.schema(device.driver), "SECRET_FILES", {}).items():
            files.append((f"{what} of device {device.name}", getattr(device.settings, key)))
    return files


def check_secrets(config: Config) -> None:
    """Raises SecretFileError for a secret file others may read, CredentialError for a missing credential."""
    refuse_loose(secret_files(config, resolve_uplink(config.uplink)))


def publisher_factory(config: Config, boot_id: bytes) -> PublisherFactory:
    """Resolve the uplink's secrets and load its signing key now; raises KeyFileError, CredentialError or
    OSError when one is missing. The factory builds the publisher over a store (`factory(store)`)."""
    uplink = resolve_uplink(config.uplink)
    key, next_key = load_private_key(uplink.signing_key), load_next_key(uplink.signing_key)
    return lambda store: Publisher(uplink, config.gateway.id, store, key, boot_id, next_key)


def metadata_events(gateway_id: str, tags: Sequence[TagConfig]) -> list[Event]:
    """`tag_metadata` events describing `tags`, METADATA_CHUNK tags per event."""
    metadata = [{"tag": tag.name, **tag.metadata()} for tag in tags]
    return [Event("tag_metadata", time.time(), gateway_id, f"metadata of {len(chunk)} tags", Priority.INFO,
                  {"tags": chunk})
            for chunk in (metadata[start:start + METADATA_CHUNK] for start in range(0, len(metadata), METADATA_CHUNK))]
