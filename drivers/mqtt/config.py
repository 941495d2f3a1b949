"""Configuration schema of the `mqtt` device kind: the broker connection, the subscriptions, the tags.

A device is one connection to one broker. Its tags say where each value comes from:

- `payload: json` (default): a tag's `topic` (a topic or a filter; its fixed levels pick its
  messages out of a wildcard subscription, e.g. `plant/+/gas/GD-101`) and the JSON mapping keys of
  `drivers.jsonmap` (`value`, `timestamp`, `quality`, `match`...);
- `payload: sparkplug_b`: the device's Sparkplug `group`, and per tag the edge `node`, optional
  `device` and the `metric` name as its birth certificate names it.

The device subscribes to `subscribe` (filters), by default to each distinct tag topic (JSON) or to
`spBv1.0/<group>/#` (Sparkplug); every tag topic must lie inside one of the subscriptions, else
it would never receive anything and check-config says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.jsonmap import JSON_TAG_FIELDS, JsonMapping, build_mapping
from drivers.mqtt.topics import TopicSyntaxError, check_filter, covers
from core.schema import (Field, Invalid, Reader, boolean, integer, number, one_of, optional,
                                    positive_duration, text)

PAYLOADS = ("json", "sparkplug_b")
VERSIONS = ("5", "3.1.1")
SPARKPLUG_NAMESPACE = "spBv1.0"
STALE_PUBLISHES = 3  # a tag not refreshed for this many publish intervals is STALE, by default
SILENT_PUBLISHES = 10  # ... and COMM_FAILURE after this many, by default
TLS_KEYS = ("ca_file", "cert_file", "key_file")

# settings holding files with secrets: refused when others can read them (check-config, start, reload)
SECRET_FILES = {"password_file": "MQTT broker password file", "key_file": "MQTT client key"}


@dataclass(frozen=True)
class JsonTopicTag:
    """A JSON tag: the topic (or filter) its messages arrive on and where its value is in them."""

    topic: str
    mapping: JsonMapping


@dataclass(frozen=True)
class SparkplugMetric:
    """A Sparkplug tag: the metric `metric` of edge node `node` (and device `device`, if any)."""

    node: str
    device: str | None
    metric: str


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    transport: str
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    username: str | None
    password_file: Path | None
    client_id: str | None
    mqtt_version: str
    keepalive: float
    persistent_session: bool
    session_expiry: float
    qos: int
    subscribe: tuple[str, ...]
    payload: str
    group: str | None
    publish_interval: float
    comm_failure_after: float
    queue_limit: int
    max_messages_per_second: float
    max_payload: int
    backoff_initial: float
    backoff_max: float


def mqtt_version(value: Any) -> str:
    """5 or 3.1.1 (YAML reads a bare 5 as a number)."""
    if str(value) not in VERSIONS:
        raise Invalid(f"{value!r} is not an MQTT version: write 5 or \"3.1.1\"")
    return str(value)


def topic_filter(value: Any) -> str:
    try:
        return check_filter(value)
    except TopicSyntaxError as exc:
        raise Invalid(str(exc)) from None


def filters(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a list of topic filters, e.g. [plant/+/gas/+], got {value!r}")
    return tuple(topic_filter(item) for item in value)


def level(value: Any) -> str:
    """A Sparkplug group, node or device id: one topic level, no wildcards."""
    value = text(value)
    if any(char in value for char in "/+#"):
        raise Invalid(f"{value!r}: a Sparkplug id is one topic level, without /, + or #")
    return value


DEVICE_FIELDS = {
    "host": Field(text, doc="host name or address of the broker the sensors publish to"),
    "port": Field(integer(1, 65535), None, "broker port; default 8883 with TLS, 1883 plain"),
    "transport": Field(one_of("tls", "plain"), "tls", "tls (the broker's certificate verified) or plain, which "
                       "must be chosen explicitly"),
    "tls": Field(lambda value: value, None, "ca_file (CA of the broker's certificate; system CAs if unset), "
                 "cert_file and key_file (client certificate)"),
    "username": Field(text, None, "user name at the broker"),
    "password_file": Field(text, None, "file holding the broker password (never inline); needs username"),
    "client_id": Field(text, None, "MQTT client id; default gatewayd-<device name>; a persistent session is "
                       "kept under it"),
    "mqtt_version": Field(mqtt_version, "5", "5 or \"3.1.1\""),
    "keepalive": Field(positive_duration, 30.0, "duration: MQTT keep-alive"),
    "persistent_session": Field(boolean, True, "keep the session (subscriptions, queued QoS 1 messages) across "
                                "reconnects"),
    "session_expiry": Field(positive_duration, 3600.0, "duration: how long the broker keeps a persistent session "
                            "while the gateway is away (MQTT 5; 3.1.1 brokers keep it until cleaned)"),
    "qos": Field(integer(0, 1), 1, "QoS of the subscriptions: 0 or 1"),
    "subscribe": Field(optional(filters), None, "topic filters to subscribe to; default each distinct tag topic "
                       "(json) or spBv1.0/<group>/# (sparkplug_b)"),
    "payload": Field(one_of(*PAYLOADS), "json", "json (tags map JSON Pointers) or sparkplug_b"),
    "group": Field(optional(level), None, "Sparkplug group id (payload: sparkplug_b)"),
    "publish_interval": Field(positive_duration, 1.0, "duration: how often each tag's sensor publishes; default "
                              f"stale_after is {STALE_PUBLISHES} of these"),
    "comm_failure_after": Field(optional(positive_duration), None,
                                "duration: a tag that received nothing this long turns COMM_FAILURE; default "
                                f"{SILENT_PUBLISHES} publish intervals"),
    "queue_limit": Field(integer(1, 10_000_000), 10_000, "messages waiting to be decoded at most; beyond it the "
                         "oldest are dropped and reported as a gap"),
    "max_messages_per_second": Field(number(1.0), 2000.0, "messages decoded per second at most; a flood beyond "
                                     "it waits in the queue"),
    "max_payload": Field(integer(16, 268_435_455), 262_144, "bytes; a larger message is DECODE_ERROR for its "
                         "tags, undecoded"),
    "backoff_initial": Field(number(0.0), 1.0, "first reconnect delay in seconds, doubled up to backoff_max"),
    "backoff_max": Field(number(0.0), 60.0, "longest reconnect delay in seconds"),
}

TAG_FIELDS = {
    "topic": Field(optional(topic_filter), None, "json: the topic or filter this tag's messages arrive on"),
    **JSON_TAG_FIELDS,
    "node": Field(optional(level), None, "sparkplug_b: edge node id"),
    "device": Field(optional(level), None, "sparkplug_b: device id under the node; unset for a node metric"),
    "metric": Field(optional(text), None, "sparkplug_b: metric name as the birth certificate gives it"),
}
JSON_KEYS = ("topic", *JSON_TAG_FIELDS)
SPARKPLUG_KEYS = ("node", "device", "metric")


def build_settings(values: dict[str, Any], reader: Reader, path: str, line: int) -> MqttSettings | None:
    """Cross-field rules of TLS, credentials and the payload profile; files resolved against the
    config file's directory."""
    problems: list[tuple[str, str]] = []
    tls = reader.section(values.pop("tls"), f"{path}.tls", line,
                         {key: Field(text, None, "") for key in TLS_KEYS}) or dict.fromkeys(TLS_KEYS)
    if values["transport"] == "plain" and any(tls.values()):
        problems.append(("tls", "TLS files given but transport is plain; set transport: tls or remove them"))
    if (tls["cert_file"] is None) != (tls["key_file"] is None):
        problems.append(("tls", "cert_file and key_file go together for a client certificate"))
    if values["password_file"] is not None and values["username"] is None:
        problems.append(("password_file", "a password needs a username"))
    if values["payload"] == "sparkplug_b" and values["group"] is None:
        problems.append(("group", "required with payload: sparkplug_b (the Sparkplug group id)"))
    if values["payload"] == "json" and values["group"] is not None:
        problems.append(("group", "a Sparkplug group applies to payload: sparkplug_b"))
    if values["backoff_max"] < values["backoff_initial"]:
        problems.append(("backoff_max", "backoff_max must be at least backoff_initial"))
    silent = values["comm_failure_after"] or SILENT_PUBLISHES * values["publish_interval"]
    if silent <= values["publish_interval"]:
        problems.append(("comm_failure_after", f"{silent:g} s is not longer than publish_interval: every tag "
                         "would turn COMM_FAILURE between two healthy messages"))
    for key, message in problems:
        reader.error(line, f"{path}.{key}", message)
    if problems:
        return None
    base = Path(reader.file).resolve().parent
    files = {key: base / tls[key] if tls[key] else None for key in TLS_KEYS}
    if values["port"] is None:
        values["port"] = 8883 if values["transport"] == "tls" else 1883
    if values["payload"] == "sparkplug_b" and values["subscribe"] is None:
        values["subscribe"] = (f"{SPARKPLUG_NAMESPACE}/{values['group']}/#",)
    values["comm_failure_after"] = silent
    password = values.pop("password_file")
    return MqttSettings(**values, **files, password_file=base / password if password else None)


def tag_items(node: dict, path: str, reader: Reader,
              settings: MqttSettings | None) -> list[tuple[Any, str, int, dict[str, Any]]]:
    """The tags under `tags:`, each told its device's settings (the payload profile decides its keys)."""
    line = Reader.key_line(node, "tags")
    return [(tag_node, tag_path, tag_line, {"device_settings": settings})
            for tag_node, tag_path, tag_line in reader.items(node.get("tags"), f"{path}.tags", line)]


def build_address(values: dict[str, Any], reader: Reader, path: str,
                  line: int) -> JsonTopicTag | SparkplugMetric | None:
    settings: MqttSettings | None = values.pop("device_settings")
    if settings is None:
        return None  # the device's own errors are reported; its profile is unknown
    own, foreign = (SPARKPLUG_KEYS, JSON_KEYS) if settings.payload == "sparkplug_b" else (JSON_KEYS, SPARKPLUG_KEYS)
    stray = [key for key in foreign if values[key] is not None]
    for key in stray:
        reader.error(line, f"{path}.{key}", f"{key} does not apply to payload: {settings.payload} "
                     f"(its tag keys: {', '.join(own)})")
    if settings.payload == "sparkplug_b":
        return _sparkplug_tag(values, reader, path, line, stray)
    return _json_tag(values, settings, reader, path, line, stray)


def _json_tag(values: dict[str, Any], settings: MqttSettings, reader: Reader, path: str, line: int,
              stray: list[str]) -> JsonTopicTag | None:
    mapping = build_mapping({key: values[key] for key in JSON_TAG_FIELDS}, reader, path, line)
    topic = values["topic"]
    if topic is None:
        reader.error(line, f"{path}.topic", "required key is missing: the topic this tag's messages arrive on")
        return None
    if settings.subscribe is not None and not any(covers(outer, topic) for outer in settings.subscribe):
        reader.error(line, f"{path}.topic", f"{topic} is not inside any subscription ({', '.join(settings.subscribe)}):"
                     " the tag would never receive a message")
        return None
    return None if mapping is None or stray else JsonTopicTag(topic, mapping)


def _sparkplug_tag(values: dict[str, Any], reader: Reader, path: str, line: int,
                   stray: list[str]) -> SparkplugMetric | None:
    missing = [key for key in ("node", "metric") if values[key] is None]
    for key in missing:
        reader.error(line, f"{path}.{key}", "required key is missing with payload: sparkplug_b")
    if missing or stray:
        return None
    return SparkplugMetric(values["node"], values["device"], values["metric"])


def check_tags(tags: list[tuple[str, str, int, Any]], reader: Reader) -> None:
    """Reject two tags of one device that read the same thing."""
    seen: dict[Any, str] = {}
    for name, path, line, address in tags:
        if address in seen:
            reader.error(line, path, f"reads the same {_what(address)} as tag {seen[address]}")
        else:
            seen[address] = name


def _what(address: JsonTopicTag | SparkplugMetric) -> str:
    if isinstance(address, SparkplugMetric):
        return f"Sparkplug metric {address.metric!r} of {address.node}{'/' + address.device if address.device else ''}"
    return f"value {address.mapping.value} of topic {address.topic}"


def staleness(poll_interval: float, settings: MqttSettings, address: Any) -> tuple[float, float]:
    """A published tag is refreshed every `publish_interval`; STALE after three by default."""
    return settings.publish_interval, STALE_PUBLISHES * settings.publish_interval


def subscriptions(settings: MqttSettings, tags: list[JsonTopicTag | SparkplugMetric]) -> tuple[str, ...]:
    """The filters the device subscribes to: its own list, else each distinct tag topic in order."""
    if settings.subscribe is not None:
        return settings.subscribe
    return tuple(dict.fromkeys(tag.topic for tag in tags if isinstance(tag, JsonTopicTag)))
