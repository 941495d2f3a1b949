"""OPC UA device and tag configuration: what is accepted, and what is refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivers.opcua.client import OpcUaDriver
from gatewayd.config import ConfigError, parse_config

SECURE = {"security_policy": "Basic256Sha256", "certificate": "pki/client.der", "private_key": "pki/client.key.pem",
          "trust_store": "pki/trusted"}


def parse(tmp_path: Path, tags: list[dict] | None = None, **device):
    document = {"gateway": {"id": "gw"},
                "devices": [{"name": "ua", "driver": "opcua", "endpoint": "opc.tcp://10.0.0.5:4840",
                             "security_policy": "None", **device,
                             "tags": tags or [{"name": "LT101", "node": "ns=2;s=Tank.Level"}]}],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    return parse_config(yaml.safe_dump(document, sort_keys=False), tmp_path / "gw.yaml").devices[0]


def errors(tmp_path: Path, tags: list[dict] | None = None, **device) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, tags, **device)
    return [str(issue) for issue in caught.value.issues]


def test_defaults_and_a_secured_device_with_paths_relative_to_the_config(tmp_path):
    device = parse(tmp_path, **SECURE, username="reader", password_file="secrets/ua.pw")
    settings = device.settings
    assert settings.security_mode == "SignAndEncrypt"  # the default for a secured policy
    assert settings.trust_store == tmp_path / "pki" / "trusted"
    assert settings.password_file == tmp_path / "secrets" / "ua.pw"
    assert (settings.sampling_interval, settings.publishing_interval) == (1.0, 0.5)  # publishing twice a sample
    assert settings.watchdog == 3.0  # 2 x keepalive_count 3 x publishing_interval 0.5 s
    node = device.tags[0].address
    assert (node.node, node.mode, node.sampling_interval, node.queue_size, node.deadband_type) == \
        ("ns=2;s=Tank.Level", "subscribe", None, 1, "none")


@pytest.mark.parametrize("rates, expected", [
    ({}, (0.5, 1.0)),  # (publishing, sampling): the value waits at most half a sample for its publish
    ({"sampling_interval": "4s"}, (2.0, 4.0)),
    ({"sampling_interval": "100ms"}, (0.05, 0.1)),
    ({"publishing_interval": "2s"}, (2.0, 2.0)),  # set alone: samples at the publishing rate, as it always did
    ({"publishing_interval": "2s", "sampling_interval": "500ms"}, (2.0, 0.5)),  # both set: as written
])
def test_default_rates_publish_twice_per_sample_unless_the_publishing_interval_is_set(tmp_path, rates, expected):
    settings = parse(tmp_path, **rates).settings
    assert (settings.publishing_interval, settings.sampling_interval) == expected


def test_a_subscribed_tag_without_its_own_sampling_interval_asks_for_the_devices(tmp_path):
    device = parse(tmp_path, [{"name": "A", "node": "ns=2;s=A"}, {"name": "B", "node": "ns=2;s=B",
                                                                  "sampling_interval": "250ms"}],
                   sampling_interval="3s")
    driver = OpcUaDriver.from_config(device, [0, 1])
    asked = [driver._item_request(index).RequestedParameters.SamplingInterval for index in (0, 1)]
    assert asked == [3000.0, 250.0]


@pytest.mark.parametrize("node", ["ns=2;s=Tank.Level", "i=2258", "ns=0;i=2258", "nsu=urn:x:y;s=A.B",
                                  "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=1;b=M/RbKBsRVkePCePcx24oRA=="])
def test_node_id_forms(tmp_path, node):
    assert parse(tmp_path, [{"name": "X", "node": node}]).tags[0].address.node == node


@pytest.mark.parametrize("device, tags, expected", [
    ({"endpoint": "http://10.0.0.5"}, None, "devices[0].endpoint: 'http://10.0.0.5' is not an OPC UA endpoint"),
    ({"security_policy": "Basic256Sha256"}, None, "devices[0].certificate: required with security_policy"),
    ({"security_policy": "Basic128Rsa15"}, None, "devices[0].security_policy: 'Basic128Rsa15' is not one of"),
    ({"security_mode": "Sign"}, None, "devices[0].security_mode: security_mode needs security_policy"),
    ({"username": "u", "password_file": "pw"}, None, "devices[0].password_file: the password would cross"),
    ({"password_file": "pw", **SECURE}, None, "devices[0].password_file: a password needs a username"),
    ({"username": "u", **SECURE}, None, "devices[0].username: a username needs password_file"),
    ({"trust_store": "trusted"}, None, "devices[0].trust_store: a trust store needs"),
    ({}, [{"name": "A", "node": "Tank.Level"}], "devices[0].tags[0].node: 'Tank.Level' is not a node id"),
    ({}, [{"name": "A", "node": "ns=2;s=X", "deadband_value": 1.0}], "devices[0].tags[0]: deadband_value needs"),
    ({}, [{"name": "A", "node": "ns=2;s=X", "deadband_type": "percent", "deadband_value": 150}],
     "devices[0].tags[0]: a percent deadband is 0-100"),
    ({}, [{"name": "A", "node": "ns=2;s=X", "mode": "poll", "queue_size": 5}],
     "devices[0].tags[0]: sampling_interval, queue_size and deadband apply to mode subscribe only"),
    ({}, [{"name": "A", "node": "ns=2;s=X"}, {"name": "B", "node": "ns=2;s=X"}],
     "devices[0].tags[1].node: node ns=2;s=X is already read by tag A"),
    ({}, [{"name": "A", "node": "ns=2;s=X", "deadband": 0.5, "deadbnd_type": "absolute"}],
     "devices[0].tags[0].deadbnd_type: unknown key 'deadbnd_type'; did you mean 'deadband_type'?"),
])
def test_refusals_name_line_and_key(tmp_path, device, tags, expected):
    found = errors(tmp_path, tags, **device)
    assert any(f"{tmp_path / 'gw.yaml'}:" in text and expected in text for text in found), found


DOCS = Path(__file__).resolve().parents[1] / "docs" / "drivers.md"


def doc_section(title_start: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"\n## {title_start}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.parametrize("title, kind", [("OPC UA", "opcua"), ("OPC DA through an OpenOPC", "opcda_gateway")])
def test_docs_examples_load_and_tables_name_every_option(tmp_path, title, kind):
    import drivers

    section = doc_section(title)
    blocks = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    assert blocks, f"no example in the {title} section"
    for block in blocks:
        devices = yaml.safe_load(block if block.startswith("devices:") else "devices:\n" + block)["devices"]
        document = {"gateway": {"id": "gw"}, "devices": devices,
                    "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
        parse_config(yaml.safe_dump(document, allow_unicode=True), tmp_path / "gw.yaml")
    schema = drivers.schema(kind)
    documented = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    assert set(schema.DEVICE_FIELDS) | set(schema.TAG_FIELDS) <= documented
