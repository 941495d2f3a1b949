"""The configuration's key tables: every section's keys, their readers, defaults and help text.

Declarative only: check-config, the key reference (`gatewayd.config.reference`), the JSON Schema
(`gatewayd.config.jsonschema`) and import-points all read these tables, so a key added here shows in
each of them. The parse that walks a document with them, and its isolation and cache, are in
`gatewayd.config.load`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import drivers
from core.schema import (
    Field, Invalid, boolean, described, duration, identifier, integer, number, one_of, optional,
    positive_duration, text,
)
from gatewayd.config.model import ACCEPT_BURST, MIN_RESERVE, ConsoleConfig, ControlConfig, LimitsConfig
from gatewayd.systemd import Credential


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
                           "and after each poll (once its writes pause for 10 ms, at most 50 ms after the first)"),
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
                         "full: every commit of samples, events and batches survives a power cut; normal: "
                         "sample-only commits may be lost, commits with events are still made full; "
                         "acknowledgements are never synced, a lost one only resends its batch "
                         "(docs/reliability.md)"),
    "max_bytes": Field(byte_size, 1 << 30, "disk budget (bytes or e.g. `512 MiB`): above it the oldest unsent "
                       "samples are thinned, then evicted, each time with a gap event; events are never evicted"),
    "thinning": Field(duration, 0.0, "duration: over budget, first keep one sample per tag per "
                      "this long among the oldest; 0 evicts the oldest samples without thinning"),
}

HISTORY_FIELDS = {
    "keep": Field(duration, 30 * 86400.0, "duration: samples and events committed are kept this long, sent or "
                  "not (by UTC day, the oldest day dropped first, with a `history_dropped` event); 0 keeps no "
                  "history"),
    "max_bytes": Field(byte_size, 4 << 30, "bound of the local history (bytes or e.g. `4 GiB`), apart from "
                       "store.max_bytes: over it the oldest day is dropped, with a `history_dropped` event; "
                       "check-config says how many days it holds"),
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
    "topic_prefix": Field(text, "gatewayd", "batches go to PREFIX/GATEWAY_ID/batch, heartbeats to "
                          "PREFIX/GATEWAY_ID/heartbeat"),
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
    "heartbeat": Field(positive_duration, 60.0, "duration: a signed heartbeat naming the chain's head this often "
                       "while connected (docs/uplink.md)"),
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

CONSOLE_FIELDS = {
    "listen": Field(listen_address, f"{ConsoleConfig.host}:{ConsoleConfig.port}",
                    "HOST:PORT the console's web page is served on; any address but loopback needs cert_file, "
                    "key_file and users_file"),
    "cert_file": Field(path_value, None, "TLS certificate (PEM, with its chain) of the console; with key_file"),
    "key_file": Field(path_value, None, "TLS private key of the console; readable by its account only "
                      "(mode 0600)"),
    "users_file": Field(path_value, None, "password hashes (scrypt) written by `gatewayd console-user`; when set, "
                        "the page asks for a login; readable by its account only (mode 0600)"),
    "poll_interval": Field(positive_duration, ConsoleConfig.poll_interval,
                           "duration: how often the console asks the daemon for status, points, alarms and "
                           "interlocks; events make it ask at once"),
    "connections": Field(integer(1, 10_000), ConsoleConfig.connections,
                         "browser connections open at once; more are closed at once"),
    "connections_per_address": Field(integer(1, 10_000), ConsoleConfig.connections_per_address,
                                     "connections one client address may hold; at most connections"),
    "header_timeout": Field(positive_duration, ConsoleConfig.header_timeout,
                            "duration: time a client has to send its request (head and body)"),
    "request_bytes": Field(integer(1024, 1 << 20), ConsoleConfig.request_bytes,
                           "bytes of a request's head, and again of its body; a longer one is refused"),
    "session_lifetime": Field(positive_duration, ConsoleConfig.session_lifetime,
                              "duration: a login is good for this long"),
    "login_failures": Field(integer(1, 1000), ConsoleConfig.login_failures,
                            "wrong passwords from one address, or for one user, before logins from it or for "
                            "that user are refused for login_lockout"),
    "login_lockout": Field(positive_duration, ConsoleConfig.login_lockout,
                           "duration: how long logins stay refused after login_failures wrong passwords"),
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
    "history": Field(lambda value: value, None, "local history: acknowledged rows kept, by day (docs/operations.md)"),
    "uplink": Field(lambda value: value, doc="the MQTT broker of the platform"),
    "rules": Field(lambda value: value, None, "alarm rules, gas channels, interlocks (docs/rules.md)"),
    "metrics": Field(lambda value: value, None, "the Prometheus endpoint; none when absent"),
    "data_quality": Field(lambda value: value, None, "how often the data-quality figures go upstream"),
    "limits": Field(lambda value: value, None, "what local peers may hold: connections, request sizes, "
                    "descriptors (docs/operations.md)"),
    "control": Field(lambda value: value, None, "who may do what on the control socket: groups per role"),
    "console": Field(lambda value: value, None, "the read-only web console (`gatewayd console`): address, TLS, "
                     "login, limits"),
}
