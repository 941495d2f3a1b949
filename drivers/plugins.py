"""Driver kinds from outside the tree: packages that register under the entry point group `gatewayd.drivers`.

An installed distribution names each of its kinds with an entry point whose object is the kind's
schema module (`tankbus = "acme_tankbus.config"`). That module keeps the contract of a built-in
schema module (`DEVICE_FIELDS`, `TAG_FIELDS`, `build_settings`, `build_address`, `check_tags`, and
the optional hooks) and names its runtime class in `DRIVER = "module:Class"`.

Listing the group reads package metadata only: nothing of a plugin is imported until a config
names its kind. Then its schema module and its runtime class are both imported and checked, so a
broken installation is found by `gatewayd check-config`, not when the daemon starts. A kind that a
built-in already has, that two packages register, that fails to import, or whose module lacks part
of the contract is a `PluginError` that says which package and what to do; the config loader
reports it at the device's `driver:` line.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

GROUP = "gatewayd.drivers"
CONTRACT = ("DEVICE_FIELDS", "TAG_FIELDS", "build_settings", "build_address", "check_tags", "DRIVER")
RUNTIME_CONTRACT = ("from_config", "run", "stats", "is_down")  # drivers.kit.Driver


class PluginError(Exception):
    """A driver kind registered under `gatewayd.drivers` that cannot be used, and why."""


@functools.cache
def registered() -> dict[str, list[EntryPoint]]:
    """Every kind installed packages register, with its entry points (more than one is a clash).

    Read once per process: a package installed later is seen after a restart, not on a reload."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, []).append(entry)
    return found


def package_sources() -> list[tuple[str, bytes]]:
    """(path, bytes) of the Python files of every package that registers a kind, in a stable order: the
    compiled-config cache keys on them, so upgrading or editing a driver package parses the config again."""
    found: dict[str, bytes] = {}
    for entries in registered().values():
        for entry in entries:
            for file in (entry.dist.files or []) if entry.dist is not None else []:
                location = Path(entry.dist.locate_file(file))
                if file.suffix == ".py" and str(location) not in found and location.is_file():
                    found[str(location)] = location.read_bytes()
    return sorted(found.items())


def origin(entry: EntryPoint) -> str:
    dist = entry.dist
    package = f"package {dist.name} {dist.version}" if dist is not None else "an unnamed package"
    return f"{package} (entry point {entry.name} = {entry.value})"


def schema(kind: str, built_in: frozenset[str]) -> ModuleType:
    """The schema module a package registers for `kind`, imported and checked; PluginError if unusable."""
    entries = registered().get(kind, [])
    if not entries:
        raise PluginError(f"no installed package registers driver {kind!r} under the entry point group {GROUP}")
    where = "; ".join(origin(entry) for entry in entries)
    if kind in built_in:
        raise PluginError(f"driver {kind!r} is built in, and {where} registers it too: uninstall that package "
                          "or have it register another name")
    if len(entries) > 1:
        raise PluginError(f"driver {kind!r} is registered more than once: {where}; uninstall all but one")
    return _load(entries[0])


@functools.cache
def _load(entry: EntryPoint) -> ModuleType:
    try:
        module = entry.load()
    except Exception as exc:  # any failure of a third party's import is that package's fault, not ours
        raise PluginError(f"driver {entry.name!r} from {origin(entry)} fails to import: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(module, ModuleType):
        raise PluginError(f"driver {entry.name!r} from {origin(entry)} names {type(module).__name__}, "
                          "not a schema module")
    missing = [name for name in CONTRACT if not hasattr(module, name)]
    if missing:
        raise PluginError(f"driver {entry.name!r} from {origin(entry)}: module {module.__name__} lacks "
                          f"{', '.join(missing)} of the driver contract (see docs/drivers.md)")
    runtime = runtime_class(module.DRIVER)
    lacking = [name for name in RUNTIME_CONTRACT if not hasattr(runtime, name)]
    if lacking:
        raise PluginError(f"driver {entry.name!r} from {origin(entry)}: class {module.DRIVER} lacks "
                          f"{', '.join(lacking)} of the driver contract (see docs/drivers.md)")
    return module


def runtime_class(reference: str) -> type:
    """The class `module:Class` names, imported; PluginError saying what failed otherwise."""
    module_name, _, class_name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # as above: report the package's fault with its name
        raise PluginError(f"driver class {reference} fails to import: {type(exc).__name__}: {exc}") from exc
