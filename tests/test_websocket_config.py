"""WebSocket device and tag configuration: what is accepted, and what is refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatewayd.config import ConfigError, parse_config

TAG = {"name": "GD201", "value": "/ch4", "match": {"/id": "GD-201"}}


def source(tags: list[dict] | None = None, **device) -> str:
    document = {"gateway": {"id": "gw"},
                "devices": [{"name": "ws", "driver": "websocket", "url": "wss://gw.plant.example:8443/feed", **device,
                             "tags": tags or [TAG]}],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    return yaml.safe_dump(document, sort_keys=False)


def parse(tmp_path: Path, tags: list[dict] | None = None, **device):
    return parse_config(source(tags, **device), tmp_path / "gw.yaml").devices[0]


def errors(tmp_path: Path, tags: list[dict] | None = None, **device) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, tags, **device)
    return [str(issue) for issue in caught.value.issues]


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def test_defaults_tls_files_relative_to_the_config_and_staleness_from_the_publish_interval(tmp_path):
    device = parse(tmp_path, tls={"ca_file": "pki/ca.pem", "cert_file": "pki/gw.pem", "key_file": "pki/gw.key"},
                   subscribe={"op": "subscribe", "ids": ["GD-201"]}, publish_interval="2s")
    settings = device.settings
    assert settings.secure and settings.ca_file == tmp_path / "pki" / "ca.pem"
    assert settings.key_file == tmp_path / "pki" / "gw.key"
    assert settings.subscribe == '{"op":"subscribe","ids":["GD-201"]}'
    assert (settings.ping_interval, settings.ping_timeout, settings.queue_limit) == (10.0, 5.0, 10_000)
    assert settings.where == {"url": "wss://gw.plant.example:8443/feed"}
    assert device.tags[0].stale_after == 6.0  # three publish intervals


@pytest.mark.parametrize("url, says", [
    ("http://gw/feed", "expected ws://host[:port]/path or wss://host[:port]/path"),
    ("ws:///feed", "expected ws://host[:port]/path"),
    ("ws://gw:99999/feed", "is not a URL"),
    ("wss://user:secret@gw/feed", "no credentials in the URL"),
])
def test_a_bad_url_is_refused_at_its_line(tmp_path, url, says):
    text = source(url=url)
    found = errors(tmp_path, url=url)
    assert any(issue.startswith(f"{tmp_path / 'gw.yaml'}:{line_of(text, 'url:')}: devices[0].url:") and says in issue
               for issue in found), found


@pytest.mark.parametrize("device, key, says", [
    ({"url": "ws://gw/feed", "tls": {"ca_file": "ca.pem"}}, "tls", "TLS files given but the url is ws://"),
    ({"tls": {"cert_file": "gw.pem"}}, "tls", "cert_file and key_file go together"),
    ({"backoff_initial": 5, "backoff_max": 1}, "backoff_max", "at least backoff_initial"),
    ({"subscribe": ""}, "subscribe", "expected the message text or a mapping"),
    ({"ping_timeout": 0}, "ping_timeout", ""),
])
def test_inconsistent_device_settings_are_named(tmp_path, device, key, says):
    found = errors(tmp_path, **device)
    assert any(f"devices[0].{key}:" in issue and says in issue for issue in found), found


def test_tag_mapping_errors_and_duplicates_are_named_at_the_tag(tmp_path):
    tags = [TAG, {**TAG, "name": "GD201B"}, {"name": "GD202", "value": "/ch4", "timestamp": "/ts"},
            {"name": "GD203", "value": "ch4"}]
    text = source(tags)
    found = errors(tmp_path, tags)
    assert any(f":{line_of(text, 'GD201B')}: devices[0].tags[1]: reads the same value /ch4" in issue
               and "as tag GD201" in issue for issue in found), found
    assert any("devices[0].tags[2].timestamp: timestamp needs timestamp_format" in issue for issue in found), found
    assert any("devices[0].tags[3].value:" in issue for issue in found), found


def test_a_client_key_others_can_read_is_refused(tmp_path):
    key = tmp_path / "pki" / "gw.key"
    key.parent.mkdir()
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    tls = {"cert_file": "pki/gw.pem", "key_file": "pki/gw.key"}
    found = errors(tmp_path, tls=tls)
    assert any("devices[0].key_file:" in issue and "WebSocket client key" in issue for issue in found), found
    key.chmod(0o600)
    assert parse(tmp_path, tls=tls).settings.key_file == key
