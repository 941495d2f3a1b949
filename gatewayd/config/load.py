"""Read, validate and compile the YAML configuration in two phases.

Phase one checks every key of every section and collects all issues (file, line, key path, what is
valid); phase two builds the frozen `Config` only if there were none. Relative paths are resolved
against the directory of the config file, so a config and its key can travel together.
"""

from __future__ import annotations

import concurrent.futures
import gc
import ipaddress
import logging
import multiprocessing
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

import drivers
from gatewayd.config.cache import ConfigCache
from gatewayd.config.model import (
    Config, ConsoleConfig, ControlConfig, DataQualityConfig, DeviceConfig, GatewayIdentity,
    HistoryConfig, LimitsConfig, MetricsConfig, StoreConfig, TagConfig, TlsConfig, UplinkConfig,
)
from gatewayd.config.tables import (
    CONSOLE_FIELDS, CONTROL_FIELDS, DATA_QUALITY_FIELDS, DEVICE_FIELDS, GATEWAY_FIELDS, HISTORY_FIELDS, LIMITS_FIELDS,
    METRICS_FIELDS, REPORT_ONLY_KEYS, STALE_POLLS, STORE_FIELDS, SYSTEMD_DIRECTORIES, TAG_FIELDS, TLS_FIELDS,
    TOP_FIELDS, UPLINK_FIELDS, listen_address,
)
from core.schema import ConfigError, ConfigIssue, Reader
from core.yamlload import load_yaml, recording_sources
from gatewayd.secretfiles import private_file_problem
from gatewayd.systemd import exec_directory
import rules.config as rules_config
import rules.config_fields as rules_fields
from rules.model import RulesConfig, TagInfo

log = logging.getLogger("gatewayd.config")


def load_config(path: str | Path) -> Config:
    """Load and validate a config file; raises ConfigError listing every issue."""
    path = Path(path)
    return _parse_bytes(_read(path), path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read: {exc}")]) from exc


def _parse_bytes(source: bytes, path: Path) -> Config:
    try:
        text_source = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read: {exc}")]) from exc
    return parse_config(text_source, path)


def load_config_isolated(path: str | Path) -> Config:
    """`load_config` in a forked child process, for the daemon, through the compiled-config cache.

    Parsing a 10,000-tag file churns through about 150 MB of small YAML objects, and the heap of the
    process that parsed it stays that large (fragmented) for its whole life. The child returns only
    the compact, pickled result, which is also what `ConfigCache` keeps: an unchanged config (the same
    bytes in every file the parse read, version, code and environment) is not parsed again at the next start.
    """
    path = Path(path)
    source = _read(path)
    cache = ConfigCache(path, source)
    payload = cache.read()
    if payload is not None:
        try:
            return _unpickle(payload)
        except Exception as exc:  # noqa: BLE001 - any failure to rebuild an entry means: parse instead
            log.warning("compiled config cache %s unusable (%s: %s); parsing the YAML", cache.path,
                        type(exc).__name__, exc)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        payload = pool.submit(_parse_pickled, source, path).result()
    config = _unpickle(payload)
    cache.write(payload, config.sources)
    return config


def _parse_pickled(source: bytes, path: Path) -> bytes:
    """In the forked child: parse with the cyclic garbage collector off, return the pickled Config.

    The parse allocates millions of objects and the collector would rescan them all again and
    again (half of the parse time for 100,000 alarms); the child exits right after, freeing it all.
    """
    gc.disable()
    return pickle.dumps(_parse_bytes(source, path), protocol=pickle.HIGHEST_PROTOCOL)


def _unpickle(payload: bytes) -> Config:
    """Rebuild a Config with the cyclic collector paused: it would otherwise rescan the growing heap
    many times over (2.5 s instead of 0.5 s for 100,000 alarms). Nothing built here is cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        config = pickle.loads(payload)
    finally:
        if enabled:
            gc.enable()
    if not isinstance(config, Config):
        raise TypeError(f"expected a Config, got {type(config).__name__}")
    return config


def parse_config(source: str, path: Path) -> Config:
    try:
        document = load_yaml(source, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 0
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: it has a position, no mark
            line = source.count("\n", 0, exc.position) + 1
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, yaml.reader.ReaderError):
            problem = f"character {exc.character!r} is not allowed in YAML ({exc.reason})"
        raise ConfigError([ConfigIssue(str(path), line, "", f"YAML syntax: {problem}")]) from exc
    reader = Reader(str(path))
    with recording_sources(path, source.encode("utf-8")) as sources:
        config = _build(document, path, reader)
    if not reader.ok or config is None:
        raise ConfigError(reader.issues)
    return replace(config, sources=tuple(sources))


def _build(document: Any, path: Path, reader: Reader) -> Config | None:
    if document is None:
        reader.error(0, "", f"the file is empty; expected the sections {', '.join(TOP_FIELDS)}")
        return None
    top = reader.section(document, "", 1, TOP_FIELDS)
    if top is None or not {"gateway", "uplink"} <= top.keys():
        return None
    base = path.resolve().parent
    gateway = _gateway(top.get("gateway"), reader, base, document)
    uplink = _uplink(top.get("uplink"), reader, base, document, gateway)
    store = _store(top.get("store"), reader, gateway)
    priorities = rules_fields.declared_priorities(top.get("rules"))
    devices = _devices(top.get("devices"), reader, _line(document, "devices"), priorities)
    tags = tuple(tag for device in devices or () for tag in device.tags)
    rules = _rules(top.get("rules"), reader, _line(document, "rules"), tags) if devices is not None else None
    metrics = _metrics(top.get("metrics"), reader, _line(document, "metrics"), gateway)
    limits = _limits(top.get("limits"), reader, _line(document, "limits"))
    quality = reader.section(top.get("data_quality"), "data_quality", _line(document, "data_quality"),
                             DATA_QUALITY_FIELDS)
    control = _control(top.get("control"), reader, _line(document, "control"))
    console = _console(top.get("console"), reader, _line(document, "console"), base)
    history = reader.section(top.get("history"), "history", _line(document, "history"), HISTORY_FIELDS)
    if gateway is None or uplink is None or store is None or devices is None or control is None or not reader.ok:
        return None
    return Config(path, gateway, devices, store, uplink, tags, rules, metrics, tuple(reader.warnings),
                  DataQualityConfig(**quality), limits=limits, control=control, console=console,
                  history=HistoryConfig(**history))


def _control(node: Any, reader: Reader, line: int) -> ControlConfig | None:
    values = reader.section(node, "control", line, CONTROL_FIELDS)
    if values is None or len(values) != len(CONTROL_FIELDS):
        return None
    if values["operator_group"] == values["approver_group"]:
        reader.warn(Reader.key_line(node, "approver_group"), "control.approver_group",
                    f"operators and approvers are one group ({values['approver_group']}): every operator may "
                    "approve another operator's request; give approvers a group of their own")
    return ControlConfig(**values)


def _console(node: Any, reader: Reader, line: int, base: Path) -> ConsoleConfig:
    """The `console:` section. Off loopback the page needs TLS and a login: without both it is refused here,
    so a console never starts that anyone on the network could read in clear or without a password."""
    values = reader.section(node, "console", line, CONSOLE_FIELDS)
    if values is None or len(values) != len(CONSOLE_FIELDS):
        return ConsoleConfig()  # the issues are recorded; no Config is built
    listen = values.pop("listen")
    host, port = listen_address(listen) if isinstance(listen, str) else listen
    for key in ("cert_file", "key_file", "users_file"):
        values[key] = base / values[key] if values[key] is not None else None
    where = Reader.key_line(node, "listen") if node else line
    if (values["cert_file"] is None) != (values["key_file"] is None):
        reader.error(where, "console", "cert_file and key_file go together: give both for TLS, or neither")
    if not loopback(host):
        missing = [key for key in ("cert_file", "key_file", "users_file") if values[key] is None]
        if missing:
            reader.error(where, "console.listen",
                         f"{host} is not a loopback address: the console serves other machines only over TLS and "
                         f"with a login; set {', '.join(missing)} (make a users file with `gatewayd console-user`), "
                         "or listen on 127.0.0.1")
    if values["connections_per_address"] > values["connections"]:
        reader.error(Reader.key_line(node, "connections_per_address"), "console.connections_per_address",
                     f"{values['connections_per_address']} is more than connections ({values['connections']})")
    _check_secret(reader, Reader.key_line(node, "key_file") if node else line, "console.key_file",
                  values["key_file"], "console TLS key")
    _check_secret(reader, Reader.key_line(node, "users_file") if node else line, "console.users_file",
                  values["users_file"], "console users file")
    return ConsoleConfig(host, port, **values)


def loopback(host: str) -> bool:
    """Whether an address is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to may change


def _metrics(node: Any, reader: Reader, line: int, gateway: GatewayIdentity | None) -> MetricsConfig | None:
    if node is None:
        return None  # no endpoint unless asked for
    values = reader.section(node, "metrics", line, METRICS_FIELDS)
    if values is None or len(values) != len(METRICS_FIELDS):
        return None
    if (values["listen"] is None) == (values["socket"] is None):
        reader.error(line, "metrics", "give either listen: HOST:PORT or socket: FILE (a Unix socket), not "
                     f"{'both' if values['listen'] else 'neither'}")
        return None
    if values["socket"] is not None:
        return MetricsConfig(None, None, gateway.runtime_dir / values["socket"] if gateway else values["socket"])
    host, port = values["listen"]
    return MetricsConfig(host, port)


def _limits(node: Any, reader: Reader, line: int) -> LimitsConfig:
    values = reader.section(node, "limits", line, LIMITS_FIELDS)
    if values is None or len(values) != len(LIMITS_FIELDS):
        return LimitsConfig()  # the issues are recorded; no Config is built
    if values["control_connections_per_account"] > values["control_connections"]:
        reader.error(Reader.key_line(node, "control_connections_per_account"),
                     "limits.control_connections_per_account",
                     f"{values['control_connections_per_account']} is more than control_connections "
                     f"({values['control_connections']}); an account can hold at most all of them")
    return LimitsConfig(**values)


def _rules(node: Any, reader: Reader, line: int, tags: tuple[TagConfig, ...]) -> RulesConfig:
    """The `rules:` section, checked against the tags of enabled devices; its interlocks' virtual
    `IL.<id>` tags must not clash with a real tag."""
    by_name = {tag.name: tag for tag in tags}
    rules = rules_config.parse_rules_section(node, "rules", line, reader, by_name) or RulesConfig()
    for index, interlock in enumerate(rules.interlocks):
        clash = by_name.get(interlock.state_tag)
        if clash is not None:
            reader.error(interlock.line, f"rules.interlocks[{index}].id",
                         f"interlock {interlock.id} forwards its in-service state as tag {interlock.state_tag}, "
                         f"which is already the tag at line {clash.line}; rename one of them")
    return rules


def _line(node: Any, key: str) -> int:
    return Reader.key_line(node, key)


def _gateway(node: Any, reader: Reader, base: Path, document: Any) -> GatewayIdentity | None:
    values = reader.section(node, "gateway", _line(document, "gateway"), GATEWAY_FIELDS)
    if values is None or "id" not in values:
        return None
    for key, (variable, default) in SYSTEMD_DIRECTORIES.items():
        if key in values:
            values[key] = base / values[key] if values[key] is not None else exec_directory(variable) or default
    try:
        return GatewayIdentity(**values)
    except TypeError:
        return None  # a field failed and its issue is recorded


def _store(node: Any, reader: Reader, gateway: GatewayIdentity | None) -> StoreConfig | None:
    values = reader.section(node, "store", 0, STORE_FIELDS)
    if values is None or gateway is None or len(values) != len(STORE_FIELDS):
        return None
    return StoreConfig(gateway.state_dir / values["path"], values["synchronous"], values["max_bytes"],
                       values["thinning"])


def _uplink(node: Any, reader: Reader, base: Path, document: Any,
            gateway: GatewayIdentity | None) -> UplinkConfig | None:
    line = _line(document, "uplink")
    values = reader.section(node, "uplink", line, UPLINK_FIELDS)
    if values is None or len(values) != len(UPLINK_FIELDS) or gateway is None:
        return None
    tls_values = reader.section(values.pop("tls"), "uplink.tls", _line(node, "tls"), TLS_FIELDS)
    if tls_values is None:
        return None
    if values["transport"] == "plain" and any(tls_values.values()):
        reader.error(_line(node, "tls"), "uplink.tls", "TLS files given but transport is plain; "
                     "set transport: tls or remove them")
    if (tls_values["cert_file"] is None) != (tls_values["key_file"] is None):
        reader.error(_line(node, "tls"), "uplink.tls", "cert_file and key_file go together for mutual TLS")
    tls = TlsConfig(**{key: base / value if value else None for key, value in tls_values.items()})
    if values["port"] is None:
        values["port"] = 8883 if values["transport"] == "tls" else 1883
    if values["client_id"] is None:
        values["client_id"] = gateway.id
    for key in ("signing_key", "password_file"):
        if isinstance(values[key], Path):
            values[key] = base / values[key]
    if values["password_file"] is not None and values["username"] is None:
        reader.error(_line(node, "password_file"), "uplink.password_file", "a password needs a username")
    _check_secret(reader, _line(node, "signing_key"), "uplink.signing_key", values["signing_key"], "signing key")
    _check_secret(reader, _line(node, "password_file"), "uplink.password_file", values["password_file"],
                  "broker password file")
    _check_secret(reader, _line(node.get("tls") or node, "key_file" if node.get("tls") else "tls"),
                  "uplink.tls.key_file", tls.key_file, "MQTT client key")
    return UplinkConfig(tls=tls, **values)


def _check_secret(reader: Reader, line: int, path: str, file: Any, what: str) -> None:
    """A secret file that exists but is readable by others, or owned by another account, is an error
    (a `credential:NAME` exists only in the running service and is checked there)."""
    if isinstance(file, Path):
        problem = private_file_problem(file, what)
        if problem is not None:
            reader.error(line, path, problem)


def _devices(node: Any, reader: Reader, line: int, priorities: Mapping[str, int]) -> tuple[DeviceConfig, ...] | None:
    items = reader.items(node, "devices", line)
    if node is not None and not isinstance(node, list):
        return None  # reported by reader.items
    devices, device_names, tag_names = [], {}, {}
    for item, path, item_line in items:
        device = _device(item, path, item_line, reader, tag_names, priorities)
        if device is None:
            continue
        if device.name in device_names:
            reader.error(item_line, f"{path}.name",
                         f"device {device.name!r} is already defined at line {device_names[device.name]}")
        device_names[device.name] = item_line
        if _enabled(item):
            devices.append(device)
    return tuple(devices)


def _enabled(item: Any) -> bool:
    return not isinstance(item, dict) or item.get("enabled", True) is not False


def _device(node: Any, path: str, line: int, reader: Reader,
            tag_names: dict[str, int], priorities: Mapping[str, int]) -> DeviceConfig | None:
    if not isinstance(node, dict) or not isinstance(node.get("driver"), str) or node["driver"] not in drivers.kinds():
        reader.section(node, path, line, DEVICE_FIELDS)  # reports what is wrong, including the driver
        return None
    try:
        driver = drivers.schema(node["driver"])
    except drivers.plugins.PluginError as exc:
        reader.error(Reader.key_line(node, "driver"), f"{path}.driver", str(exc))
        return None
    tags_key = getattr(driver, "TAGS_KEY", "tags")
    common_fields = {(tags_key if key == "tags" else key): field for key, field in DEVICE_FIELDS.items()}
    values = reader.section(node, path, line, {**common_fields, **driver.DEVICE_FIELDS})
    if values is None or "name" not in values:
        return None
    common = {key: values.pop(key) for key in list(common_fields) if key in values}
    settings = None
    if len(values) == len(driver.DEVICE_FIELDS):
        settings = driver.build_settings(values, reader, path, line)
    for key, what in getattr(driver, "SECRET_FILES", {}).items():
        if settings is not None:
            _check_secret(reader, Reader.key_line(node, key), f"{path}.{key}", getattr(settings, key), what)
    timing = DeviceTiming(driver, settings, common.get("poll_interval", DEVICE_FIELDS["poll_interval"].default),
                          common.get("stale_after"), common.get("report", "exception"), path,
                          Reader.key_line(node, "stale_after"))
    tags, addresses = [], []
    for tag_node, tag_path, tag_line, context in _tag_items(driver, node, path, reader, settings):
        tag = _tag(tag_node, tag_path, tag_line, reader, driver, common["name"], priorities, context, timing)
        if tag is None:
            continue
        if tag.name in tag_names:
            reader.error(tag_line, f"{tag_path}.name",
                         f"tag {tag.name!r} is already defined at line {tag_names[tag.name]}")
            continue
        tag_names[tag.name] = tag_line
        tags.append(tag)
        addresses.append((tag.name, tag_path, tag_line, tag.address))
    driver.check_tags(addresses, reader)
    if settings is None or len(common) != len(DEVICE_FIELDS):
        return None
    return DeviceConfig(common["name"], common["driver"], common["poll_interval"], common["timeout"],
                        settings, tuple(tags), line)


@dataclass
class DeviceTiming:
    """What a tag inherits from its device for staleness and reporting, and how its driver refreshes it.

    A driver's schema module may define `staleness(poll_interval, settings, address)` returning (the
    longest time between two refreshes of a healthy tag, the default `stale_after`); without it a tag is
    refreshed every poll interval and turns STALE after STALE_POLLS of them.
    """

    driver: Any  # the driver kind's schema module
    settings: Any  # its settings, None when they failed
    poll_interval: float
    stale_after: float | None  # the device's own, None for the driver's default
    report: str
    path: str
    line: int  # of the device's stale_after key
    reported: bool = False  # the device's stale_after was found too short already

    def staleness(self, address: Any) -> tuple[float, float]:
        hook = getattr(self.driver, "staleness", None)
        if hook is None or self.settings is None:
            return self.poll_interval, STALE_POLLS * self.poll_interval
        return hook(self.poll_interval, self.settings, address)

    def stale_after_of(self, own: float | None, address: Any, reader: Reader, path: str, line: int) -> float:
        """The tag's `stale_after`: its own, else the device's, else the driver's default; one that could
        not outlast the gap between two healthy refreshes is an error (every tag would flicker STALE)."""
        refresh, default = self.staleness(address)
        chosen = own if own is not None else self.stale_after if self.stale_after is not None else default
        if chosen > refresh:
            return chosen
        message = (f"{chosen:g} s is not longer than the {refresh:g} s between two refreshes of this tag: "
                   "it would turn STALE between healthy reads; leave it out for the default or make it longer")
        if own is not None:
            reader.error(line, f"{path}.stale_after", message)
        elif self.stale_after is not None and not self.reported:
            self.reported = True
            reader.error(self.line, f"{self.path}.stale_after", message)
        return chosen


def _tag_items(driver: Any, node: dict, path: str, reader: Reader,
               settings: Any) -> list[tuple[Any, str, int, dict[str, Any]]]:
    """(tag node, key path, line, context) of each tag of a device.

    Most drivers list their tags under `tags:`, with an empty context. A driver whose tags are nested
    or derived (an RTU bus's `slaves[].tags`, a gas panel's `channels`) names that key in `TAGS_KEY`
    and lists them with its `tag_items(node, path, reader, settings)`; the context it gives each tag
    (its slave, its channel) is handed to its `build_address` with the tag's own keys.
    """
    tag_items = getattr(driver, "tag_items", None)
    if tag_items is not None:
        return tag_items(node, path, reader, settings)
    return [(tag_node, tag_path, tag_line, {})
            for tag_node, tag_path, tag_line in reader.items(node.get("tags"), f"{path}.tags", _line(node, "tags"))]


def _tag(node: Any, path: str, line: int, reader: Reader, driver: Any, device: str,
         priorities: Mapping[str, int], context: dict[str, Any], timing: DeviceTiming) -> TagConfig | None:
    values = reader.section(node, path, line, {**TAG_FIELDS, **driver.TAG_FIELDS})
    if values is None or len(values) != len(TAG_FIELDS) + len(driver.TAG_FIELDS):
        return None
    own = {key: values.pop(key) for key in list(TAG_FIELDS)}
    address = driver.build_address({**values, **context}, reader, path, Reader.key_line(node, "address"))
    own["report"] = own["report"] or timing.report
    if own["report"] == "every_read":
        for key in REPORT_ONLY_KEYS:
            if key in node:
                reader.error(Reader.key_line(node, key), f"{path}.{key}",
                             f"{key} applies to report: exception; with every_read each completed read is "
                             "stored once, whatever its change")
    if address is not None:
        own["stale_after"] = timing.stale_after_of(own["stale_after"], address, reader, path,
                                                   Reader.key_line(node, "stale_after"))
    low, high = own.pop("range") or (None, None)
    alarms_node = own.pop("alarms")
    alarms = rules_config.parse_tag_alarms(alarms_node, f"{path}.alarms", _line(node, "alarms"), reader,
                                           TagInfo(own["name"], own["unit"], low, high), priorities)
    if address is None or (alarms_node is not None and alarms is None):
        return None
    return TagConfig(device=device, address=address, line=line, range_low=low, range_high=high,
                     alarms=alarms, **own)

