"""Configuration schema of the `websocket` device kind: one connection to a device or vendor gateway.

The device is a URL (`ws://` or `wss://`; with wss the server's certificate is always verified,
against `tls.ca_file` or the system CAs, and `tls.cert_file`/`key_file` give a client certificate),
an optional `subscribe` message sent after each connect, the ping/pong watchdog, and the bounds of
the inbound queue. Each tag maps JSON Pointers into the messages with the keys of
`drivers.jsonmap` (the same as an MQTT tag's), `match` saying which messages are its own
when one connection carries many sensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drivers.jsonmap import JSON_TAG_FIELDS, JsonMapping, build_mapping
from core.schema import Field, Invalid, Reader, integer, number, positive_duration, text

STALE_PUBLISHES = 3  # a tag not refreshed for this many publish intervals is STALE, by default
TLS_KEYS = ("ca_file", "cert_file", "key_file")
SCHEMES = {"ws": 80, "wss": 443}

# settings holding files with secrets: refused when others can read them (check-config, start, reload)
SECRET_FILES = {"key_file": "WebSocket client key"}


@dataclass(frozen=True)
class WebSocketSettings:
    url: str
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    subscribe: str | None  # the text frame sent after each connect
    ping_interval: float
    ping_timeout: float
    publish_interval: float
    queue_limit: int
    max_messages_per_second: float
    max_payload: int
    backoff_initial: float
    backoff_max: float

    @property
    def secure(self) -> bool:
        return self.url.startswith("wss:")

    @property
    def where(self) -> dict[str, Any]:
        """The location fields of the device's up/down events: the URL without query or credentials."""
        parts = urlsplit(self.url)
        return {"url": f"{parts.scheme}://{parts.hostname}:{parts.port or SCHEMES[parts.scheme]}{parts.path}"}


def websocket_url(value: Any) -> str:
    value = text(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise Invalid(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise Invalid(f"{value!r}: expected ws://host[:port]/path or wss://host[:port]/path")
    if parts.username or parts.password:
        raise Invalid(f"{value!r}: no credentials in the URL (they would end up in logs and events)")
    return value


def subscribe_message(value: Any) -> str:
    """Text sent as is; a mapping or list is sent as its JSON."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (dict, list)) and value:
        return json.dumps(value, separators=(",", ":"))
    raise Invalid(f"expected the message text or a mapping sent as JSON, got {value!r}")


DEVICE_FIELDS = {
    "url": Field(websocket_url, doc="ws://host[:port]/path, or wss:// for TLS with the server's certificate "
                 "verified"),
    "tls": Field(lambda value: value, None, "wss only: ca_file (CA of the server's certificate; system CAs if "
                 "unset), cert_file and key_file (client certificate)"),
    "subscribe": Field(subscribe_message, None, "message sent after each connect: text as is, a mapping as JSON; "
                       "none if unset"),
    "ping_interval": Field(positive_duration, 10.0, "duration: a ping is sent this often"),
    "ping_timeout": Field(positive_duration, 5.0, "duration: without the pong this long the connection is dropped "
                          "(device down, every tag COMM_FAILURE) and made again"),
    "publish_interval": Field(positive_duration, 1.0, "duration: how often each tag's sensor sends; default "
                              f"stale_after is {STALE_PUBLISHES} of these"),
    "queue_limit": Field(integer(1, 10_000_000), 10_000, "messages waiting to be decoded at most; beyond it the "
                         "oldest are dropped and reported as a gap"),
    "max_messages_per_second": Field(number(1.0), 2000.0, "messages decoded per second at most; a flood beyond "
                                     "it waits in the queue"),
    "max_payload": Field(integer(16, 268_435_455), 262_144, "bytes; a larger message closes the connection "
                         "(WebSocket close code 1009), which is made again"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 60.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = dict(JSON_TAG_FIELDS)


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> WebSocketSettings | None:
    """Cross-field rules of TLS and backoff; files resolved against the config file's directory."""
    problems: list[tuple[str, str]] = []
    tls = reader.section(values.pop("tls"), f"{path}.tls", line,
                         {key: Field(text, None, "") for key in TLS_KEYS}) or dict.fromkeys(TLS_KEYS)
    if not values["url"].startswith("wss:") and any(tls.values()):
        problems.append(("tls", "TLS files given but the url is ws://; use wss:// or remove them"))
    if (tls["cert_file"] is None) != (tls["key_file"] is None):
        problems.append(("tls", "cert_file and key_file go together for a client certificate"))
    if values["backoff_max"] < values["backoff_initial"]:
        problems.append(("backoff_max", "backoff_max must be at least backoff_initial"))
    for key, message in problems:
        reader.error(line, f"{path}.{key}", message)
    if problems:
        return None
    base = Path(reader.file).resolve().parent
    return WebSocketSettings(**values, **{key: base / tls[key] if tls[key] else None for key in TLS_KEYS})


def build_address(values: dict[str, Any], reader: Reader, path: str, line: int) -> JsonMapping | None:
    return build_mapping(values, reader, path, line)


def check_tags(tags: list[tuple[str, str, int, JsonMapping]], reader: Reader) -> None:
    """Reject two tags of one device that read the same value of the same messages."""
    seen: dict[JsonMapping, str] = {}
    for name, path, line, mapping in tags:
        if mapping in seen:
            reader.error(line, path, f"reads the same value {mapping.value} of the same messages as tag "
                         f"{seen[mapping]}")
        else:
            seen[mapping] = name


def staleness(poll_interval: float, settings: WebSocketSettings, address: Any) -> tuple[float, float]:
    """A pushed tag is refreshed every `publish_interval`; STALE after three by default."""
    return settings.publish_interval, STALE_PUBLISHES * settings.publish_interval
