"""Read, validate and compile the YAML configuration in two phases.

Phase one checks every key of every section and collects all issues (file, line, key path, what is
valid); phase two builds the frozen `Config` only if there were none. Relative paths are resolved
against the directory of the config file, so a config and its key can travel together.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import multiprocessing
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

import drivers
from gatewayd.config.cache import ConfigCache
from gatewayd.config.model import (
    ACCEPT_BURST, MIN_RESERVE, Config, ControlConfig, DataQualityConfig, DeviceConfig, GatewayIdentity,
    LimitsConfig, MetricsConfig, StoreConfig, TagConfig, TlsConfig, UplinkConfig,
)
from core.schema import described, optional, positive_duration
from core.schema import (
    ConfigError, ConfigIssue, Field, Invalid, Reader, boolean, duration, identifier, integer, number,
    one_of, text,
)
from core.yamlload import load_yaml, recording_sources
from gatewayd.secretfiles import private_file_problem
from gatewayd.systemd import Credential, exec_directory
import rules.config as rules_config
import rules.config_fields as rules_fields
from rules.model import RulesConfig, TagInfo

log = logging.getLogger("gatewayd.config")


@described({"type": ["string", "integer", "null"]})
def optional_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Invalid(f"expected text, got {value!r}")
    return str(value)


@described({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2})
def value_range(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid("expected [low, high]")
    low, high = (number()(item) for item in value)
    if not low < high:
        raise Invalid(f"low {low} must be below high {high}")
    return low, high


@described({"type": "number", "exclusiveMinimum": 0})
def positive_rate(value: Any) -> float:
    rate = number()(value)
    if rate <= 0:
        raise Invalid(f"{rate:g} must be above zero (units per second); leave max_rate out to switch the check off")
    return rate


@described({"type": "string", "minLength": 1})
def path_value(value: Any) -> Path:
    return Path(text(value))


CREDENTIAL_PREFIX = "credential:"
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


@described({"type": "string", "minLength": 1})
def secret_source(value: Any) -> Path | Credential:
    """A file path, or `credential:NAME` for a secret systemd passes in with LoadCredential=NAME:FILE."""
    value = text(value)
    if not value.startswith(CREDENTIAL_PREFIX):
        return Path(value)
    name = value[len(CREDENTIAL_PREFIX):]
    if not CREDENTIAL_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a credential name: use letters, digits, '.', '_' or '-', as in "
                      "credential:signing.key (the NAME of the unit's LoadCredential=NAME:FILE)")
    return Credential(name)


@described({"type": "string", "pattern": ":[0-9]+$"})
def listen_address(value: Any) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT`."""
    host, sep, port = text(value).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:9108")
    return host, int(port)


SIZE_UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


@described({"type": ["integer", "string"]})
def byte_size(value: Any) -> int:
    """A size in bytes: an integer, or a number with a unit such as `512 MiB` or `2 GB`."""
    if isinstance(value, int) and not isinstance(value, bool):
        number_part, unit = value, "B"
    elif isinstance(value, str) and len(value.split()) == 2 and value.split()[1] in SIZE_UNITS:
        number_part, unit = value.split()
        try:
            number_part = float(number_part)
        except ValueError:
            number_part = float("nan")
        if not 0 < number_part < 2**53:
            raise Invalid(f"expected a size such as 512 MiB, got {value!r}")
    else:
        raise Invalid(f"expected bytes or a size with a unit ({', '.join(SIZE_UNITS)}), got {value!r}")
    size = int(number_part * SIZE_UNITS[unit])
    if size < 1 << 20:
        raise Invalid(f"{size} bytes is too small for a store; give at least 1 MiB")
    return size


GATEWAY_FIELDS = {
    "id": Field(identifier, doc="gateway code, unique on the platform; part of the MQTT topic"),
    "name": Field(optional_text, "", "human-readable name of the gateway"),
    "plant": Field(optional_text, "", "plant or site the gateway serves"),
    "scan_interval": Field(positive_duration, 1.0,
                           "duration: rules and report-by-exception run at least this often, "
                           "and right after each poll"),
    "state_dir": Field(path_value, None, "database and sequence state; default $STATE_DIRECTORY (set by the "
                       "unit's StateDirectory=), else /var/lib/gatewayd"),
    "cache_dir": Field(path_value, None, "compiled rule kernels; default $CACHE_DIRECTORY, else /var/cache/gatewayd"),
    "runtime_dir": Field(path_value, None, "control socket; default $RUNTIME_DIRECTORY, else /run/gatewayd"),
}

# gateway directory key -> (variable systemd sets for the unit's *Directory= setting, default without it)
SYSTEMD_DIRECTORIES = {
    "state_dir": ("STATE_DIRECTORY", Path("/var/lib/gatewayd")),
    "cache_dir": ("CACHE_DIRECTORY", Path("/var/cache/gatewayd")),
    "runtime_dir": ("RUNTIME_DIRECTORY", Path("/run/gatewayd")),
}

STORE_FIELDS = {
    "path": Field(path_value, Path("gatewayd.db"), "SQLite file, relative to gateway.state_dir"),
    "synchronous": Field(one_of("full", "normal"), "full",
                         "full: every commit survives a power cut; normal: sample-only commits may be "
                         "lost, commits with events are still made full (docs/reliability.md)"),
    "max_bytes": Field(byte_size, 1 << 30, "disk budget (bytes or e.g. `512 MiB`): above it the oldest unsent "
                       "samples are thinned, then evicted, each time with a gap event; events are never evicted"),
    "thinning": Field(duration, 0.0, "duration: over budget, first keep one sample per tag per "
                      "this long among the oldest; 0 evicts the oldest samples without thinning"),
}

TLS_FIELDS = {
    "ca_file": Field(path_value, None, "CA bundle that signed the broker's certificate; system CAs if unset"),
    "cert_file": Field(path_value, None, "client certificate for mutual TLS"),
    "key_file": Field(path_value, None, "client private key for mutual TLS"),
}

UPLINK_FIELDS = {
    "host": Field(text, doc="MQTT broker"),
    "port": Field(integer(1, 65535), None, "default 8883 with TLS, 1883 plain"),
    "transport": Field(one_of("tls", "plain"), "tls", "plain must be chosen explicitly"),
    "tls": Field(lambda value: value, None, "ca_file, cert_file, key_file"),
    "topic_prefix": Field(text, "gatewayd", "batches go to PREFIX/GATEWAY_ID/batch"),
    "client_id": Field(identifier, None, "default: the gateway id"),
    "username": Field(text, None, "broker user name, if the broker asks for one"),
    "password_file": Field(secret_source, None, "file holding the broker password (never inline), "
                           "or credential:NAME"),
    "signing_key": Field(secret_source, doc="Ed25519 private key from `gatewayd keygen`: a path, or "
                         "credential:NAME for the unit's LoadCredential=NAME:FILE"),
    "keepalive": Field(positive_duration, 30.0, "duration: MQTT keep-alive"),
    "batch_max_rows": Field(integer(1, 100_000), 5000, "samples and events per batch at most"),
    "max_inflight": Field(integer(1, 64), 4, "batches published and not yet acknowledged"),
    "ack_timeout": Field(positive_duration, 15.0, "duration: republish a batch not acknowledged in this time"),
    "live_share": Field(number(0.0, 0.5), 0.2, "during a backfill, this share of batches carries the newest "
                        "rows so live data keeps flowing; 0 sends strictly oldest first"),
    "max_bytes_per_second": Field(integer(1000), None, "upstream rate limit in bytes per second; unlimited if unset"),
}

REPORT_MODES = ("exception", "every_read")
STALE_POLLS = 3  # a poll-read tag not refreshed for this many poll intervals is STALE, by default
REPORT_ONLY_KEYS = ("deadband", "max_interval")  # tag keys that only report: exception uses

TAG_FIELDS = {
    "name": Field(identifier, doc="tag number (位号), unique in the gateway"),
    "description": Field(optional_text, "", "what the value is, as operators name it"),
    "unit": Field(optional_text, "", "engineering unit, e.g. m, °C, MPa, %LEL, ppm"),
    "range": Field(value_range, None, "[low, high] of the instrument"),
    "target_code": Field(optional_text, "", "platform target code (指标编码)"),
    "equipment_code": Field(optional_text, "", "equipment code (设备编码)"),
    "hazard_source_code": Field(optional_text, "", "major hazard source code"),
    "production_unit": Field(optional_text, "", "production unit the tag belongs to"),
    "deadband": Field(number(0.0), 0.0, "report a new sample only when it moved this much"),
    "max_interval": Field(positive_duration, 60.0, "duration: report at least this often even if unchanged "
                          "(report: exception)"),
    "stale_after": Field(optional(positive_duration), None, "duration: not refreshed this long, the value turns "
                         "STALE; default the device's"),
    "report": Field(optional(one_of(*REPORT_MODES)), None, "exception or every_read; default the device's"),
    "alarms": Field(lambda value: value, None, "limit alarms hh, h, l, ll with deadband, delays, priority"),
    "frozen_after": Field(optional(positive_duration), None,
                          "duration: a value unchanged this long (reads still arriving) raises a `frozen` event; "
                          "off when unset"),
    "max_rate": Field(optional(positive_rate), None,
                      "fastest believable change in units per second; a read moving faster counts as a rate "
                      "violation in the data-quality figures; off when unset"),
}

def driver_kind(value: Any) -> str:
    """A built-in driver kind or one an installed package registers; whether the latter is usable is
    checked when the device is read (`_device`), where a PluginError can name the package."""
    kinds = drivers.kinds()
    if value not in kinds:
        raise Invalid(f"{value!r} is not one of: {', '.join(kinds)}")
    return value


DEVICE_FIELDS = {
    "name": Field(identifier, doc="device name, unique in the gateway; used in events and logs"),
    "driver": Field(driver_kind, doc=f"one of: {', '.join(drivers.DRIVERS)}, or a kind an installed package "
                    f"registers under the entry point group `{drivers.plugins.GROUP}` (docs/drivers.md)"),
    "poll_interval": Field(positive_duration, 1.0, "duration: how often the device is read"),
    "timeout": Field(positive_duration, 1.0, "duration: per request; keep it at most the poll interval"),
    "enabled": Field(boolean, True, "false keeps the device in the file but does not poll it"),
    "stale_after": Field(optional(positive_duration), None,
                         "duration: a tag not refreshed this long turns STALE; default three poll intervals "
                         "(OPC UA subscriptions: keepalive_count + 1 publishing intervals)"),
    "report": Field(one_of(*REPORT_MODES), "exception", "exception: a sample when the value moved past deadband, "
                    "its quality changed or max_interval passed; every_read: every completed read, once"),
    "tags": Field(lambda value: value, doc="list of tags"),
}

DATA_QUALITY_FIELDS = {
    "interval": Field(positive_duration, 3600.0, "duration: how often a `data_quality` event per device goes "
                      "upstream with the figures of the period since the last one"),
}

GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


@described({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"})
def group_name(value: Any) -> str:
    """A Unix group name as groupadd accepts it (letters, digits, '_', '.', '-'; at most 32)."""
    if not isinstance(value, str) or not GROUP_NAME.fullmatch(value):
        raise Invalid(f"{value!r} is not a group name: a letter or '_' first, then letters, digits, '_', '.' or '-', "
                      "at most 32 characters (as groupadd takes it)")
    return value


CONTROL_FIELDS = {
    "view_group": Field(group_name, ControlConfig.view_group,
                        "members may read: status, tail, alarms, interlocks, bypass list and requests"),
    "operator_group": Field(group_name, ControlConfig.operator_group,
                            "members may act on alarms (ack, shelve, out of service, reset...), request and "
                            "revoke bypasses, and reload; they may also read"),
    "approver_group": Field(group_name, ControlConfig.approver_group,
                            "members may approve another account's bypass or highly managed alarm request; "
                            "they may also read"),
    "approval_window": Field(positive_duration, ControlConfig.approval_window,
                             "duration: a request not approved within it expires"),
}

METRICS_FIELDS = {
    "listen": Field(listen_address, None, "HOST:PORT of the Prometheus endpoint, e.g. 127.0.0.1:9108; anyone "
                    "who can reach it can read the figures, so keep it on loopback or a management network"),
    "socket": Field(path_value, None, "a Unix socket instead of `listen` (one of the two): a file name under "
                    "gateway.runtime_dir, or an absolute path; mode 0660, so only the daemon's account and "
                    "group can read the figures"),
}

LIMITS_FIELDS = {
    "control_connections": Field(integer(1, 10_000), LimitsConfig.control_connections,
                                 "control socket connections open at once; more are closed at once"),
    "control_connections_per_account": Field(integer(1, 10_000), LimitsConfig.control_connections_per_account,
                                             "control socket connections one kernel account (SO_PEERCRED uid) "
                                             "may hold; at most control_connections"),
    "control_idle_timeout": Field(positive_duration, LimitsConfig.control_idle_timeout,
                                  "duration: a control connection that does not complete a request in this "
                                  "time is closed; a `tail` stream is not idle while its reader keeps up"),
    "control_request_bytes": Field(integer(1024, 1 << 24), LimitsConfig.control_request_bytes,
                                   "bytes of one control request line; a longer one is refused and the "
                                   "connection closed"),
    "control_request_depth": Field(integer(2, 1000), LimitsConfig.control_request_depth,
                                   "how deeply the arrays and objects of a control request may nest"),
    "metrics_connections": Field(integer(1, 10_000), LimitsConfig.metrics_connections,
                                 "metrics endpoint connections open at once; more are closed at once"),
    "metrics_header_timeout": Field(positive_duration, LimitsConfig.metrics_header_timeout,
                                    "duration: time a metrics client has to send its request, and again to "
                                    "take the answer"),
    "metrics_request_bytes": Field(integer(256, 1 << 20), LimitsConfig.metrics_request_bytes,
                                   "bytes of a metrics request's header; a longer one is refused"),
    "reserved_descriptors": Field(integer(MIN_RESERVE, 1 << 20), LimitsConfig.reserved_descriptors,
                                  "the last this many descriptors below the process's limit are never given "
                                  "to a control or metrics peer: they stay for devices, store and uplink "
                                  f"(at least {MIN_RESERVE}: each endpoint accepts up to {ACCEPT_BURST} "
                                  "connections at once before it can refuse them)"),
    "refusal_log_interval": Field(positive_duration, LimitsConfig.refusal_log_interval,
                                  "duration: refused connections and requests are logged once per peer and "
                                  "this period, with the count of the others"),
}

TOP_FIELDS = {
    "gateway": Field(lambda value: value, doc="identity and directories"),
    "devices": Field(lambda value: value, doc="the devices to read and their tags"),
    "store": Field(lambda value: value, None, "the SQLite outbox"),
    "uplink": Field(lambda value: value, doc="the MQTT broker of the platform"),
    "rules": Field(lambda value: value, None, "alarm rules, gas channels, interlocks (docs/rules.md)"),
    "metrics": Field(lambda value: value, None, "the Prometheus endpoint; none when absent"),
    "data_quality": Field(lambda value: value, None, "how often the data-quality figures go upstream"),
    "limits": Field(lambda value: value, None, "what local peers may hold: connections, request sizes, "
                    "descriptors (docs/operations.md)"),
    "control": Field(lambda value: value, None, "who may do what on the control socket: groups per role"),
}


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
    if gateway is None or uplink is None or store is None or devices is None or control is None or not reader.ok:
        return None
    return Config(path, gateway, devices, store, uplink, tags, rules, metrics, tuple(reader.warnings),
                  DataQualityConfig(**quality), limits=limits, control=control)


def _control(node: Any, reader: Reader, line: int) -> ControlConfig | None:
    values = reader.section(node, "control", line, CONTROL_FIELDS)
    if values is None or len(values) != len(CONTROL_FIELDS):
        return None
    if values["operator_group"] == values["approver_group"]:
        reader.warn(Reader.key_line(node, "approver_group"), "control.approver_group",
                    f"operators and approvers are one group ({values['approver_group']}): every operator may "
                    "approve another operator's request; give approvers a group of their own")
    return ControlConfig(**values)


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

