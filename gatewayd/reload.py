"""Reload: re-read the config file, validate it, and prepare what the running daemon applies.

`gatewayd reload` and SIGHUP land here. The file is parsed off the event loop (in a forked child, like
at start); an invalid file is refused and the running config stays. A valid one is compared with the
running config (`gatewayd.config.diff`, a pure function), and what changed is built with the same
assembly as at start (`gatewayd.assembly`) into a `ReloadPlan`, before anything running is touched.
The daemon applies the plan (`Daemon.apply`):

- a device whose configuration changed is stopped and started again; the others keep their
  connection and their schedule (drivers write through a `DeviceSink`, which a reload retargets when
  the point table is rebuilt, so a running driver never notices);
- when tags or rules changed, a new point table, rule engine and scanner replace the old ones after a
  last tick of the old ones; values, qualities and report-by-exception state of the tags that remain
  are copied, and the alarm and bypass states are carried over by id (`gatewayd.values.carry`);
- the publisher is restarted only if `uplink:` changed, or `gatewayd keygen --rotate` made a next key; the
  new one republishes the batches the old one had in flight, since they are in the store until acknowledged;
- keys the daemon cannot change while running (its directories, identity, store, metrics endpoint, limits,
  the control socket's roles) refuse the reload, naming the key, rather than half-applying it.

Every reload leaves an event upstream: `config_reloaded` (new SHA-256 and what changed) or
`config_rejected` (the errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from gatewayd.assembly import (
    Points,
    PublisherFactory,
    build_driver,
    build_points,
    check_secrets,
    publisher_factory,
    resolve_uplink,
)
from gatewayd.config import ConfigError, load_config_isolated
from gatewayd.config.diff import ConfigDiff, diff_configs, restart_message
from gatewayd.config.model import Config
from gatewayd.keys import KeyFileError, next_key_path
from gatewayd.secretfiles import SecretFileError
from gatewayd.systemd import CredentialError
from core.types import Event, Priority
from gatewayd.uplink.publisher import Publisher
from store import Store

log = logging.getLogger("gatewayd.reload")


class ReloadRefused(ValueError):
    """The new configuration is not applied; the message says why and the old one keeps running."""


@dataclass
class ReloadPlan:
    """A validated new configuration and what it takes to run it, built but not running yet."""

    config: Config
    digest: str
    diff: ConfigDiff
    drivers: dict[str, Any]  # the devices added or restarted, by name
    points: Points | None  # a new table, engine and scanner when tags or rules changed
    publisher: PublisherFactory | None  # when `uplink:` changed


class Running(Protocol):
    """What the reloader reads of the running daemon, and how it hands a plan over."""

    config: Config
    store: Store
    boot_id: bytes
    publisher: Publisher

    def record(self, event: Event) -> None: ...

    def apply(self, plan: ReloadPlan) -> Awaitable[list[str]]: ...


def _load(old: Config) -> tuple[Config, ConfigDiff]:
    """Off the event loop (in a thread): parse in a forked child, as at start; the diff (about 0.5 s of
    Python for 10,000 tags, which the loop would otherwise spend blocked)."""
    new = load_config_isolated(old.file)
    return new, diff_configs(old, new)


class Reloader:
    """Re-reads the running daemon's config file and has the daemon apply it; one reload at a time."""

    def __init__(self, daemon: Running):
        self.daemon = daemon
        self.digest = ""  # of the running config; the daemon sets it at start
        self.reloads = self.rejections = 0
        self._lock = asyncio.Lock()

    async def reload(self, who: str) -> dict[str, Any]:
        """Re-read and apply; raises ReloadRefused (the running config stays) with the reason."""
        async with self._lock:
            plan = await self.prepare(who)
            if plan is None:
                return {"applied": False, "sha256": self.digest, "summary": "no change",
                        "changes": ConfigDiff().as_dict()}
            notes = await self.daemon.apply(plan)
            return self._applied(plan, who, notes)

    async def prepare(self, who: str) -> ReloadPlan | None:
        """Parse, diff and build; None when nothing changed. Raises ReloadRefused (recorded upstream)."""
        old = self.daemon.config
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
        if diff.empty and digest == self.digest and not self._next_key_appeared(new):
            log.info("reload requested by %s: %s unchanged", who, old.file)
            return None
        return self.build(new, digest, diff, who)

    def _next_key_appeared(self, new: Config) -> bool:
        """`gatewayd keygen --rotate` made a next key since the publisher started: a new one announces it."""
        if self.daemon.publisher.keys.began_with_next:
            return False
        try:
            return next_key_path(resolve_uplink(new.uplink).signing_key).exists()
        except CredentialError:
            return False  # check_secrets says why, when the plan is built

    def build(self, new: Config, digest: str, diff: ConfigDiff, who: str) -> ReloadPlan:
        """What can fail is built before anything running is touched: the new uplink's secrets and key,
        the new drivers and, when tags or rules changed, the new point table, rule engine and scanner.
        Secret files loosened since the start (or new ones) refuse the reload, as at start."""
        try:
            check_secrets(new)
        except (SecretFileError, CredentialError) as exc:
            self._reject(who, str(exc).splitlines(), f"{exc}; the running configuration stays")
        publisher = None
        if diff.uplink_changed or self._next_key_appeared(new):
            try:
                publisher = publisher_factory(new, self.daemon.boot_id)
            except (KeyFileError, CredentialError, OSError) as exc:
                self._reject(who, [str(exc)], f"uplink: {exc}; the running configuration stays")
        devices = {device.name: device for device in new.devices}
        try:
            drivers = {name: build_driver(devices[name]) for name in diff.devices_added + diff.devices_restarted}
            points = build_points(new, self.daemon.store) if diff.rebuild_points else None
        except Exception as exc:  # valid but not buildable is a bug: refuse rather than half-apply
            log.exception("reload: building the new configuration failed")
            self._reject(who, [f"{type(exc).__name__}: {exc}"],
                         f"cannot apply the configuration ({type(exc).__name__}: {exc}); nothing was changed")
        return ReloadPlan(new, digest, diff, drivers, points, publisher)

    def _applied(self, plan: ReloadPlan, who: str, notes: list[str]) -> dict[str, Any]:
        previous, self.digest = self.digest, plan.digest
        self.reloads += 1
        summary = plan.diff.summary()
        self.daemon.record(Event(
            "config_reloaded", time.time(), plan.config.gateway.id, f"configuration reloaded by {who}: {summary}",
            Priority.INFO, {"config_sha256": plan.digest, "previous_sha256": previous,
                            "config_files": plan.config.source_list(), "account": who,
                            "changes": plan.diff.as_dict(), "notes": notes}))
        log.info("configuration reloaded by %s (sha256 %s): %s", who, plan.digest[:16], summary)
        for note in notes:
            log.warning("reload: %s", note)
        return {"applied": True, "sha256": plan.digest, "summary": summary, "changes": plan.diff.as_dict(),
                "notes": notes}

    def _reject(self, who: str, errors: list[str], message: str) -> NoReturn:
        self.rejections += 1
        # one stamped line: the journal would show the errors of a multi-line message unstamped
        log.error("reload requested by %s refused: %s", who, message.replace(":\n", ": ", 1).replace("\n", "; "))
        config = self.daemon.config
        self.daemon.record(Event("config_rejected", time.time(), config.gateway.id,
                                 f"configuration reload by {who} refused; the running configuration stays",
                                 Priority.MEDIUM, {"errors": errors, "account": who, "file": str(config.file)}))
        raise ReloadRefused(message)
