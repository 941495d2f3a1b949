"""What a reload changes: a pure comparison of two validated configurations (`diff_configs`).

`gatewayd.reload` applies what this finds; nothing here touches a running daemon. Line numbers never
count as a change (`essence`), and the keys a running daemon cannot change are named (`needs_restart`)
so that the reload is refused rather than half-applied.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gatewayd.config.model import Config, DeviceConfig, point_tags

# gateway keys a reload applies; every other gateway key, the whole store and history sections, the metrics
# endpoint, the limits and the control section are set up once at start and need a restart
LIVE_GATEWAY_KEYS = frozenset({"name", "plant", "scan_interval"})


def essence(obj: Any, skip: frozenset[str] = frozenset({"line", "sources"})) -> Any:
    """A comparable form of a config object without its `line` fields and the digests of the files it was
    read from: moving a device down the file by adding lines above it must not count as changing it.
    Fields named in `skip` are left out."""
    if obj is None or isinstance(obj, (str, int)):
        return obj
    fields = getattr(type(obj), "__dataclass_fields__", None)
    if fields is not None:
        return (type(obj).__name__, tuple((name, essence(getattr(obj, name))) for name in fields if name not in skip))
    if isinstance(obj, (list, tuple)):
        return tuple(essence(item) for item in obj)
    if isinstance(obj, Mapping):
        return tuple(sorted((str(key), essence(value)) for key, value in obj.items()))
    if isinstance(obj, (set, frozenset)):
        return tuple(sorted(repr(essence(item)) for item in obj))
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


@dataclasses.dataclass
class ConfigDiff:
    """What a reload changes, by name."""

    devices_added: list[str] = dataclasses.field(default_factory=list)
    devices_removed: list[str] = dataclasses.field(default_factory=list)
    devices_restarted: list[str] = dataclasses.field(default_factory=list)
    tags_added: list[str] = dataclasses.field(default_factory=list)
    tags_removed: list[str] = dataclasses.field(default_factory=list)
    tags_changed: list[str] = dataclasses.field(default_factory=list)
    rules_changed: bool = False
    uplink_changed: bool = False
    gateway_changed: list[str] = dataclasses.field(default_factory=list)  # live keys, e.g. gateway.scan_interval
    needs_restart: list[str] = dataclasses.field(default_factory=list)  # keys a reload cannot apply

    @property
    def rebuild_points(self) -> bool:
        """Tags or rules changed: the point table, rule engine and scanner are rebuilt."""
        return bool(self.tags_added or self.tags_removed or self.tags_changed or self.rules_changed)

    @property
    def empty(self) -> bool:
        return not (self.devices_added or self.devices_removed or self.devices_restarted or self.rebuild_points
                    or self.uplink_changed or self.gateway_changed or self.needs_restart)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "needs_restart"}

    def summary(self) -> str:
        parts = [f"{label}: {', '.join(names)}" for label, names in (
            ("devices added", self.devices_added), ("devices removed", self.devices_removed),
            ("devices restarted", self.devices_restarted), ("tags added", self.tags_added),
            ("tags removed", self.tags_removed), ("tags changed", self.tags_changed),
            ("applied", self.gateway_changed)) if names]
        if self.rules_changed:
            parts.append("rules changed")
        if self.uplink_changed:
            parts.append("uplink restarted")
        return "; ".join(parts) or "no change"


DEVICE_OWN = frozenset({"line", "tags"})


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """What changed from `old` to `new`; each tag's essence is computed once."""
    diff = ConfigDiff()
    old_tags = {tag.name: essence(tag) for tag in point_tags(old)}
    new_tags = {tag.name: essence(tag) for tag in point_tags(new)}
    diff.tags_added = [name for name in new_tags if name not in old_tags]
    diff.tags_removed = [name for name in old_tags if name not in new_tags]
    diff.tags_changed = [name for name, tag in new_tags.items() if name in old_tags and tag != old_tags[name]]

    def device_essence(device: DeviceConfig, tags: dict[str, Any]) -> Any:
        return essence(device, DEVICE_OWN), tuple((tag.name, tags[tag.name]) for tag in device.tags)

    old_devices = {device.name: device for device in old.devices}
    new_devices = {device.name: device for device in new.devices}
    diff.devices_added = [name for name in new_devices if name not in old_devices]
    diff.devices_removed = [name for name in old_devices if name not in new_devices]
    diff.devices_restarted = [name for name, device in new_devices.items() if name in old_devices
                              and device_essence(device, new_tags) != device_essence(old_devices[name], old_tags)]
    diff.rules_changed = essence(old.rules) != essence(new.rules)
    diff.uplink_changed = essence(old.uplink) != essence(new.uplink)
    for field in dataclasses.fields(old.gateway):
        if essence(getattr(old.gateway, field.name)) != essence(getattr(new.gateway, field.name)):
            key = f"gateway.{field.name}"
            (diff.gateway_changed if field.name in LIVE_GATEWAY_KEYS else diff.needs_restart).append(key)
    for field in dataclasses.fields(old.store):
        if essence(getattr(old.store, field.name)) != essence(getattr(new.store, field.name)):
            diff.needs_restart.append(f"store.{field.name}")
    if essence(old.metrics) != essence(new.metrics):
        diff.needs_restart.append("metrics.listen")
    for section in ("limits", "control", "history"):
        before, after = getattr(old, section), getattr(new, section)
        diff.needs_restart += [f"{section}.{field.name}" for field in dataclasses.fields(after)
                               if getattr(before, field.name) != getattr(after, field.name)]
    return diff


def restart_message(keys: Sequence[str]) -> str:
    return (f"{', '.join(keys)} changed: the daemon sets {'this' if len(keys) == 1 else 'these'} up only at "
            f"start; restart it to apply (systemctl restart gatewayd). Nothing was changed.")
