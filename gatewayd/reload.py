"""Reload: re-read the config file, validate it, and apply it to the running daemon without losing data.

`gatewayd reload` and SIGHUP land here. The file is parsed off the event loop (in a forked child, like
at start); an invalid file is refused and the running config stays. A valid one is compared with the
running config (`gatewayd.config.diff`, a pure function) and only what changed is touched:

- a device whose configuration changed is stopped and started again; the others keep their
  connection and their schedule (drivers write through a `DeviceSink`, which a reload retargets when
  the point table is rebuilt, so a running driver never notices);
- when tags or rules changed, a new point table, rule engine and scanner replace the old ones after a
  last tick of the old ones; values, qualities and report-by-exception state of the tags that remain
  are copied, and the alarm and bypass states are carried over by id (`engine.state_dict()`);
- the publisher is restarted only if `uplink:` changed; the new one republishes the batches the old
  one had in flight, since they are in the store until acknowledged;
- keys the daemon cannot change while running (its directories, identity, store, metrics endpoint, limits,
  the control socket's roles)
  refuse the reload, naming the key, rather than half-applying it.

Every reload leaves an event upstream: `config_reloaded` (new SHA-256 and what changed) or
`config_rejected` (the errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gatewayd.config.diff import ConfigDiff, diff_configs, restart_message
from gatewayd.config.model import Config, DeviceConfig, point_tags
from gatewayd.types import Event, Priority, Quality

log = logging.getLogger("gatewayd.reload")

METADATA_CHUNK = 500


class ReloadRefused(ValueError):
    """The new configuration is not applied; the message says why and the old one keeps running."""


# ------------------------------------------------------------------------------------------ carrying state over

class DeviceSink:
    """What a driver writes into: positions 0..n-1 of its own tag list, mapped onto point-table rows.

    A reload that rebuilds the table retargets the sink; the driver keeps running and never knows.
    """

    def __init__(self, table: Any, rows: np.ndarray):
        self.table, self.rows = table, rows

    def retarget(self, table: Any, rows: np.ndarray) -> None:
        self.table, self.rows = table, rows

    def write(self, rows: np.ndarray, values: np.ndarray, quality: int | np.ndarray = Quality.GOOD,
              source_ts: float | np.ndarray | None = None, read_at: float | np.ndarray | None = None) -> None:
        self.table.write(self.rows[rows], values, quality, source_ts, read_at)

    def set_quality(self, rows: np.ndarray, quality: int, read_at: float | np.ndarray | None = None) -> None:
        self.table.set_quality(self.rows[rows], quality, read_at)

    def confirm(self, rows: np.ndarray, read_at: float | None = None) -> None:
        self.table.confirm(self.rows[rows], read_at)

    def widen_stale_after(self, rows: np.ndarray, seconds: float) -> None:
        self.table.widen_stale_after(self.rows[rows], seconds)

    def event(self, event: Event) -> None:
        self.table.event(event)


def build_driver(device: DeviceConfig) -> Any:
    """The runtime driver of a device, writing to positions 0..n-1 of its tags (see DeviceSink)."""
    import drivers

    return drivers.create(device, np.arange(len(device.tags), dtype=np.int64))


def device_sink(device: DeviceConfig, table: Any) -> DeviceSink:
    return DeviceSink(table, table.rows_of([tag.name for tag in device.tags]))


def create_driver(device: DeviceConfig, table: Any) -> tuple[Any, DeviceSink]:
    """The runtime driver of a device and the sink it runs with (`await driver.run(sink)`)."""
    return build_driver(device), device_sink(device, table)


def common_rows(old_names: Sequence[str], new_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the tags present in both tables: (rows in the old table, rows in the new one)."""
    old_rows = {name: row for row, name in enumerate(old_names)}
    pairs = [(old_rows[name], row) for row, name in enumerate(new_names) if name in old_rows]
    old_index = np.array([pair[0] for pair in pairs], dtype=np.int64)
    new_index = np.array([pair[1] for pair in pairs], dtype=np.int64)
    return old_index, new_index


def copy_points(old: Any, new: Any, old_rows: np.ndarray, new_rows: np.ndarray) -> None:
    """Current values, qualities and their times of the remaining tags; pending events move along, and the
    new table wakes the same scan loop."""
    for name in ("value", "quality", "source_ts", "gateway_ts", "updated", "reads", "held_quality"):
        getattr(new, name)[new_rows] = getattr(old, name)[old_rows]
    new.pending_events = old.take_events()
    new.changed = old.changed


REPORT_STATE = ("last_value", "last_quality", "last_time", "last_update")


def copy_report_state(old: Any, new: Any, old_rows: np.ndarray, new_rows: np.ndarray) -> None:
    """Report-by-exception state of the remaining tags, so that a reload sends no burst of repeats; the
    scan counters, the outbox and the tap carry over whole."""
    for name in REPORT_STATE:
        getattr(new, name)[new_rows] = getattr(old, name)[old_rows]
    new.stats, new.outbox, new.tap = old.stats, old.outbox, old.tap


def _load(old: Config) -> tuple[Config, ConfigDiff]:
    """Off the event loop (in a thread): parse in a forked child, as at start; the diff (about 0.5 s of
    Python for 10,000 tags, which the loop would otherwise spend blocked)."""
    from gatewayd.config import load_config_isolated

    new = load_config_isolated(old.file)
    return new, diff_configs(old, new)


# ------------------------------------------------------------------------------------------ applying

class Reloader:
    """Applies a re-read config to a running `gatewayd.daemon.Daemon`; one reload at a time."""

    def __init__(self, daemon: Any):
        self.daemon = daemon
        self.digest = ""  # of the running config; the daemon sets it at start
        self.reloads = self.rejections = 0
        self._lock = asyncio.Lock()

    async def reload(self, who: str) -> dict[str, Any]:
        """Re-read and apply; raises ReloadRefused (the running config stays) with the reason."""
        async with self._lock:
            return await self._reload(who)

    async def _reload(self, who: str) -> dict[str, Any]:
        from gatewayd.config import ConfigError

        daemon = self.daemon
        old = daemon.config
        try:
            new, diff = await asyncio.get_running_loop().run_in_executor(None, _load, old)
        except ConfigError as exc:
            self._reject(who, [str(issue) for issue in exc.issues],
                         f"configuration invalid, the running one stays:\n{exc}")
        except OSError as exc:
            self._reject(who, [f"{old.file}: cannot read: {exc.strerror or exc}"],
                         f"cannot read {old.file}: {exc.strerror or exc}; the running configuration stays")
        digest = new.config_sha256  # over every file the parse read, as at start
        if diff.needs_restart:
            self._reject(who, [restart_message(diff.needs_restart)], restart_message(diff.needs_restart))
        if diff.empty and digest == self.digest:
            log.info("reload requested by %s: %s unchanged", who, old.file)
            return {"applied": False, "sha256": digest, "summary": "no change", "changes": diff.as_dict()}
        self._check_secrets(new, who)
        publisher = self._prepare_publisher(new, who) if diff.uplink_changed else None
        drivers, points = self._prepare(new, diff, who)
        notes = await self._apply(new, diff, publisher, drivers, points)
        previous, self.digest = self.digest, digest
        self.reloads += 1
        summary = diff.summary()
        daemon.table.event(Event(
            "config_reloaded", time.time(), new.gateway.id, f"configuration reloaded by {who}: {summary}",
            Priority.INFO, {"config_sha256": digest, "previous_sha256": previous,
                            "config_files": new.source_list(), "account": who,
                            "changes": diff.as_dict(), "notes": notes}))
        log.info("configuration reloaded by %s (sha256 %s): %s", who, digest[:16], summary)
        for note in notes:
            log.warning("reload: %s", note)
        return {"applied": True, "sha256": digest, "summary": summary, "changes": diff.as_dict(), "notes": notes}

    def _reject(self, who: str, errors: list[str], message: str) -> None:
        self.rejections += 1
        # one stamped line: the journal would show the errors of a multi-line message unstamped
        log.error("reload requested by %s refused: %s", who, message.replace(":\n", ": ", 1).replace("\n", "; "))
        daemon = self.daemon
        daemon.table.event(Event("config_rejected", time.time(), daemon.config.gateway.id,
                                 f"configuration reload by {who} refused; the running configuration stays",
                                 Priority.MEDIUM, {"errors": errors, "account": who, "file": str(daemon.config.file)}))
        raise ReloadRefused(message)

    def _check_secrets(self, new: Config, who: str) -> None:
        """Secret files loosened since the start (or new ones) refuse the reload, as at start."""
        from gatewayd.daemon import resolve_uplink, secret_files
        from gatewayd.secretfiles import SecretFileError, refuse_loose
        from gatewayd.systemd import CredentialError

        try:
            refuse_loose(secret_files(new, resolve_uplink(new.uplink)))
        except (SecretFileError, CredentialError) as exc:
            self._reject(who, str(exc).splitlines(), f"{exc}; the running configuration stays")

    def _prepare_publisher(self, new: Config, who: str) -> Any:
        """The new uplink's secrets and key, loaded before anything stops: an unreadable key refuses the reload."""
        from gatewayd.daemon import resolve_uplink
        from gatewayd.keys import KeyFileError, load_private_key
        from gatewayd.systemd import CredentialError
        from gatewayd.uplink.publisher import Publisher

        daemon = self.daemon
        try:
            uplink = resolve_uplink(new.uplink)
            key = load_private_key(uplink.signing_key)
        except (KeyFileError, CredentialError, OSError) as exc:
            self._reject(who, [str(exc)], f"uplink: {exc}; the running configuration stays")
        return lambda: Publisher(uplink, new.gateway.id, daemon.store, key, daemon.boot_id)

    def _prepare(self, new: Config, diff: ConfigDiff, who: str) -> tuple[dict[str, Any], tuple | None]:
        """What can fail is built before anything running is touched: the new drivers and, when tags or
        rules changed, the new point table and rule engine (still empty)."""
        from gatewayd.values.points import PointTable
        from gatewayd.values.scan import build_engine

        devices = {device.name: device for device in new.devices}
        try:
            drivers = {name: build_driver(devices[name]) for name in diff.devices_added + diff.devices_restarted}
            points = None
            if diff.rebuild_points:
                table = PointTable(point_tags(new))
                points = table, build_engine(new, table)
        except Exception as exc:  # valid but not buildable is a bug: refuse rather than half-apply
            log.exception("reload: building the new configuration failed")
            self._reject(who, [f"{type(exc).__name__}: {exc}"],
                         f"cannot apply the configuration ({type(exc).__name__}: {exc}); nothing was changed")
        return drivers, points

    async def _apply(self, new: Config, diff: ConfigDiff, publisher: Any, drivers: dict[str, Any],
                     points: tuple | None) -> list[str]:
        daemon = self.daemon
        for name in diff.devices_removed + diff.devices_restarted:
            await daemon.stop_driver(name)
            del daemon.drivers[name], daemon.sinks[name]
        notes = self._swap_points(new, diff, *points) if points is not None else []
        daemon.config = new
        devices = {device.name: device for device in new.devices}
        for name, driver in drivers.items():
            daemon.drivers[name], daemon.sinks[name] = driver, device_sink(devices[name], daemon.table)
            daemon.start_driver(name)
        if publisher is not None:
            await daemon.replace_publisher(publisher)
        return notes

    def _swap_points(self, new: Config, diff: ConfigDiff, table: Any, engine: Any) -> list[str]:
        """The new point table, rule engine and a new scanner take over with the state of the old ones;
        synchronous, so no poll or scan runs halfway through."""
        from gatewayd.operator.control import rule_handlers
        from gatewayd.values.scan import Scanner, build_data_quality

        daemon = self.daemon
        old_table, old_scanner = daemon.table, daemon.scanner
        old_scanner.tick()  # commit what the polls brought under the old configuration
        names = [tag.name for tag in table.tags]
        old_rows, new_rows = common_rows([tag.name for tag in old_table.tags], names)
        copy_points(old_table, table, old_rows, new_rows)
        notes = engine.restore(old_scanner.engine.state_dict())
        quality = build_data_quality(new, table, time.monotonic(), time.time())
        if old_scanner.data_quality is not None:
            quality.adopt(old_scanner.data_quality, old_rows, new_rows)
        scanner = Scanner(table, daemon.store.tag_ids(names), daemon.store, engine, quality)
        copy_report_state(old_scanner, scanner, old_rows, new_rows)
        devices = {device.name: device for device in new.devices}
        for name, sink in daemon.sinks.items():
            sink.retarget(table, table.rows_of([tag.name for tag in devices[name].tags]))
        daemon.table, daemon.engine, daemon.scanner = table, engine, scanner
        daemon.control.handlers.update(rule_handlers(engine, scanner.commit,
                                                     daemon.config.control.approval_window))
        scanner.save_state()
        described = set(diff.tags_added) | set(diff.tags_changed)
        metadata = [{"tag": tag.name, **tag.metadata()} for tag in table.tags if tag.name in described]
        for start in range(0, len(metadata), METADATA_CHUNK):
            chunk = metadata[start:start + METADATA_CHUNK]
            table.event(Event("tag_metadata", time.time(), new.gateway.id, f"metadata of {len(chunk)} tags",
                              Priority.INFO, {"tags": chunk}))
        return notes
