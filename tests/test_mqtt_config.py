"""`mqtt` device and tag configuration: defaults, and what is refused with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from drivers.mqtt.config import JsonTopicTag, SparkplugMetric, subscriptions
from gatewayd.config import ConfigError, parse_config
from core.types import Quality

UPLINK = {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}


def parse(tmp_path: Path, tags: list[dict] | None = None, **device):
    document = {"gateway": {"id": "gw"},
                "devices": [{"name": "sensors", "driver": "mqtt", "host": "broker.plant", **device,
                             "tags": tags or [{"name": "GD101", "topic": "plant/a1/gas/GD-101", "value": "/ch4"}]}],
                "uplink": UPLINK}
    return parse_config(yaml.safe_dump(document, sort_keys=False), tmp_path / "gw.yaml").devices[0]


def errors(tmp_path: Path, tags: list[dict] | None = None, **device) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, tags, **device)
    return [str(issue).split(": ", 1)[1] for issue in caught.value.issues]


def test_defaults_verify_tls_and_subscribe_to_each_tag_topic(tmp_path):
    device = parse(tmp_path, [{"name": "A", "topic": "plant/a1/gas/GD-101", "value": "/ch4"},
                              {"name": "B", "topic": "plant/a1/gas/GD-101", "value": "/h2s"},
                              {"name": "C", "topic": "plant/+/gas/GD-102", "value": "/ch4", "timestamp": "/ts",
                               "timestamp_format": "iso8601", "quality": "/status",
                               "quality_map": {"ok": "GOOD", 0: "GOOD", "fault": "SENSOR_FAULT"}}],
                   tls={"ca_file": "pki/plant-ca.pem"})
    settings = device.settings
    assert (settings.transport, settings.port, settings.qos, settings.mqtt_version) == ("tls", 8883, 1, "5")
    assert settings.ca_file == tmp_path / "pki" / "plant-ca.pem" and settings.persistent_session
    assert settings.comm_failure_after == 10.0 and settings.payload == "json"
    assert [tag.stale_after for tag in device.tags] == [3.0, 3.0, 3.0]
    addresses = [tag.address for tag in device.tags]
    assert all(isinstance(address, JsonTopicTag) for address in addresses)
    assert subscriptions(settings, addresses) == ("plant/a1/gas/GD-101", "plant/+/gas/GD-102")
    mapping = addresses[2].mapping
    assert mapping.read({"ch4": 1, "ts": "2026-12-01T18:30:00Z", "status": 0.0}).quality == Quality.GOOD


def test_sparkplug_defaults_to_the_groups_namespace(tmp_path):
    device = parse(tmp_path, [{"name": "V", "node": "edge1", "device": "pump-1", "metric": "Vibration/RMS"},
                              {"name": "U", "node": "edge1", "metric": "uptime"}],
                   payload="sparkplug_b", group="site1", transport="plain", publish_interval="5s")
    assert device.settings.subscribe == ("spBv1.0/site1/#",) and device.settings.port == 1883
    assert [tag.address for tag in device.tags] == [SparkplugMetric("edge1", "pump-1", "Vibration/RMS"),
                                                   SparkplugMetric("edge1", None, "uptime")]
    assert [tag.stale_after for tag in device.tags] == [15.0, 15.0]


def test_errors_name_file_line_and_key(tmp_path):
    text = textwrap.dedent("""\
        gateway: {id: gw}
        uplink: {host: 127.0.0.1, transport: plain, signing_key: key.pem}
        devices:
          - name: sensors
            driver: mqtt
            host: broker.plant
            transport: plain
            subscribe: [plant/+/gas/+]
            tls: {ca_file: ca.pem}
            tags:
              - {name: A, topic: plant/a1/water/LT-1, value: /level}
              - {name: B, topic: plant/a1/gas/GD-1, value: ch4, timestamp: /ts}
              - {name: C, topic: plant/a1/gas/GD-2, value: /ch4, node: edge1}
              - {name: D, topic: plant/a1/gas/GD-3, value: /ch4, quality: /s, quality_map: {ok: FINE}}
              - {name: E, topic: plant/a1/gas/GD-3, value: /ch4, quality: /s, quality_map: {ok: GOOD}}
              - {name: F, topic: plant/a1/gas/GD-3, value: /ch4, quality: /s, quality_map: {ok: GOOD}}
        """)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "gw.yaml")
    assert str(caught.value.issues[0]) == (f"{tmp_path / 'gw.yaml'}:4: devices[0].tls: TLS files given but "
                                           "transport is plain; set transport: tls or remove them")
    text = text.replace("    tls: {ca_file: ca.pem}\n", "")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "gw.yaml")
    issues = [str(issue).replace(str(tmp_path / "gw.yaml"), "gw.yaml") for issue in caught.value.issues]
    assert issues == [
        "gw.yaml:10: devices[0].tags[0].topic: plant/a1/water/LT-1 is not inside any subscription (plant/+/gas/+): "
        "the tag would never receive a message",
        "gw.yaml:11: devices[0].tags[1].value: 'ch4' is not a JSON Pointer: it starts with / (e.g. /ch4), or is "
        "empty for the whole document",
        "gw.yaml:12: devices[0].tags[2].node: node does not apply to payload: json (its tags keys: topic, value, "
        "timestamp, timestamp_format, quality, quality_map, match)".replace("its tags keys", "its tag keys"),
        "gw.yaml:13: devices[0].tags[3].quality_map: status 'ok': 'FINE' is not a quality; use one of GOOD, "
        "UNCERTAIN, STALE, CLOCK_UNSYNCED, NO_VALUE, COMM_FAILURE, OUT_OF_RANGE, SENSOR_FAULT, MAINTENANCE, "
        "DEVICE_ERROR, DECODE_ERROR",
        "gw.yaml:15: devices[0].tags[5]: reads the same value /ch4 of topic plant/a1/gas/GD-3 as tag E",
    ]


@pytest.mark.parametrize("device, expected", [
    ({"payload": "sparkplug_b"}, ["devices[0].group: required with payload: sparkplug_b (the Sparkplug group id)"]),
    ({"group": "site1"}, ["devices[0].group: a Sparkplug group applies to payload: sparkplug_b"]),
    ({"password_file": "pw"}, ["devices[0].password_file: a password needs a username"]),
    ({"tls": {"cert_file": "c.pem"}}, ["devices[0].tls: cert_file and key_file go together for a client "
                                       "certificate"]),
    ({"mqtt_version": 4}, ["devices[0].mqtt_version: 4 is not an MQTT version: write 5 or \"3.1.1\""]),
    ({"qos": 2}, ["devices[0].qos: 2 is out of range 0..1"]),
    ({"subscribe": ["plant/#/x"]}, ["devices[0].subscribe: 'plant/#/x': # must be the whole last level, as in "
                                    "a/b/#"]),
    ({"publish_interval": "10s", "comm_failure_after": "5s"},
     ["devices[0].comm_failure_after: 5 s is not longer than publish_interval: every tag would turn COMM_FAILURE "
      "between two healthy messages"]),
    ({"transport": "tcp"}, ["devices[0].transport: 'tcp' is not one of: tls, plain"]),
])
def test_device_errors(tmp_path, device, expected):
    assert errors(tmp_path, **device) == expected


@pytest.mark.parametrize("tag, expected", [
    ({"value": "/v"}, ["devices[0].tags[0].topic: required key is missing: the topic this tag's messages arrive on"]),
    ({"topic": "a/b"}, ["devices[0].tags[0].value: required key is missing: the JSON Pointer to the reading, "
                        "e.g. /value"]),
    ({"topic": "a/b", "value": "/v", "timestamp": "/t"}, ["devices[0].tags[0].timestamp: timestamp needs "
                                                         "timestamp_format"]),
    ({"topic": "a/b", "value": "/v", "timestamp": "/t", "timestamp_format": "us"},
     ["devices[0].tags[0].timestamp_format: 'us' is not one of: s, ms, iso8601"]),
    ({"topic": "a/b", "value": "/v", "match": {"/id": [1]}}, ["devices[0].tags[0].match: /id: [1] is not a scalar "
                                                             "(a string, number, boolean or null)"]),
])
def test_json_tag_errors(tmp_path, tag, expected):
    assert errors(tmp_path, [{"name": "T", **tag}]) == expected


def test_sparkplug_tag_errors(tmp_path):
    found = errors(tmp_path, [{"name": "T", "node": "edge/1", "metric": "m"}, {"name": "U", "device": "d"},
                              {"name": "V", "node": "n", "metric": "m", "value": "/v"}],
                   payload="sparkplug_b", group="g")
    assert found == [
        "devices[0].tags[0].node: 'edge/1': a Sparkplug id is one topic level, without /, + or #",
        "devices[0].tags[1].node: required key is missing with payload: sparkplug_b",
        "devices[0].tags[1].metric: required key is missing with payload: sparkplug_b",
        "devices[0].tags[2].value: value does not apply to payload: sparkplug_b (its tag keys: node, device, metric)",
    ]


def test_a_loose_password_file_is_refused(tmp_path):
    secret = tmp_path / "broker.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    found = errors(tmp_path, username="gw", password_file="broker.pw")
    assert len(found) == 1 and found[0].startswith("devices[0].password_file: ") and "chmod 600" in found[0]


def test_the_drivers_doc_example_loads_and_its_tables_name_every_option(tmp_path):
    import drivers

    text = (Path(__file__).resolve().parents[1] / "docs" / "drivers.md").read_text(encoding="utf-8")
    start = text.index("\n## MQTT smart sensors")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    blocks = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    assert blocks
    for block in blocks:
        document = {"gateway": {"id": "gw"}, "devices": yaml.safe_load(block)["devices"], "uplink": UPLINK}
        devices = parse_config(yaml.safe_dump(document, allow_unicode=True), tmp_path / "gw.yaml").devices
        assert [device.settings.payload for device in devices] == ["json", "sparkplug_b"]
    schema = drivers.schema("mqtt")
    documented = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    assert set(schema.DEVICE_FIELDS) | set(schema.TAG_FIELDS) <= documented
