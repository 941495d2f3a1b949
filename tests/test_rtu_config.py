"""The `modbus_rtu` bus schema: serial settings, slaves, and every error with file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.config import ConfigError, parse_config

HEAD = """gateway: {id: GW-RTU}
uplink: {host: broker, signing_key: k}
devices:
  - name: bus1
    driver: modbus_rtu
    port: /dev/ttyUSB0
"""
SLAVES = """    slaves:
      - unit_id: 1
        poll_interval: 500ms
        tags:
          - {name: PT1, address: 0, type: float32}
          - {name: TT1, address: 2, type: int16, scale: 0.1}
      - unit_id: 2
        tags:
          - {name: PT2, address: 0, type: float32}
"""


def parse(text: str, tmp_path: Path):
    return parse_config(text, tmp_path / "bus.yaml")


def errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, tmp_path)
    return [str(issue).removeprefix(f"{tmp_path / 'bus.yaml'}:") for issue in caught.value.issues]


def test_a_bus_with_two_slaves(tmp_path):
    config = parse(HEAD + "    baud: 19200\n    parity: E\n    timeout: 200ms\n" + SLAVES, tmp_path)
    device = config.devices[0]
    assert [tag.name for tag in device.tags] == ["PT1", "TT1", "PT2"]
    settings = device.settings
    assert (settings.baud, settings.parity, settings.stop_bits, settings.byte_size) == (19200, "E", 1, 8)
    assert settings.char_bits == 11 and settings.frame_silence == pytest.approx(3.5 * 11 / 19200)
    first, second = device.tags[0].address.slave, device.tags[2].address.slave
    assert (first.unit_id, first.poll_interval, first.timeout) == (1, 0.5, None)
    assert (second.unit_id, second.poll_interval) == (2, None)
    assert device.tags[1].address.register.scale == 0.1


def test_fast_lines_use_the_fixed_silence_and_an_override_wins(tmp_path):
    fast = parse(HEAD + "    baud: 115200\n" + SLAVES, tmp_path).devices[0].settings
    assert fast.frame_silence == 0.00175
    override = parse(HEAD + "    silence: 5ms\n" + SLAVES, tmp_path).devices[0].settings
    assert override.frame_silence == 0.005


@pytest.mark.parametrize("settings, expected", [
    ("    baud: 14400\n", "7: devices[0].baud: 14400 is not a standard baud rate"),
    ("    parity: X\n", "7: devices[0].parity: 'X' is not one of: N, E, O"),
    ("    stop_bits: 3\n", "7: devices[0].stop_bits: 3 is not one of: 1, 2"),
    ("    byte_size: 5\n", "7: devices[0].byte_size: 5 is not one of: 7, 8"),
    ("    rts_delay_before_tx: 0.01\n", "4: devices[0].rs485: RTS delays need rs485: true"),
    ("    tags: []\n", "7: devices[0].tags: unknown key 'tags'"),
])
def test_serial_settings_are_checked(tmp_path, settings, expected):
    assert any(error.startswith(expected) for error in errors(HEAD + settings + SLAVES, tmp_path))


def test_unit_ids_are_unique_on_a_bus(tmp_path):
    text = HEAD + SLAVES.replace("unit_id: 2", "unit_id: 1")
    assert "13: devices[0].slaves[1].unit_id: unit id 1 is already used on this bus by the slave at line 8" \
        in errors(text, tmp_path)


def test_registers_overlap_per_slave_only(tmp_path):
    overlapping = SLAVES.replace("{name: TT1, address: 2,", "{name: TT1, address: 1,")
    assert "12: devices[0].slaves[0].tags[1]: holding register 1 overlaps tag PT1 (holding 0..1); " \
           "give each value its own registers" in errors(HEAD + overlapping, tmp_path)


@pytest.mark.parametrize("slave, expected", [
    ("      - {unit_id: 0, tags: [{name: X, address: 0}]}\n", "devices[0].slaves[2].unit_id: 0 is out of range 1..247"),
    ("      - {unit_id: 3}\n", "devices[0].slaves[2].tags: required key is missing"),
    ("      - {unit_id: 3, tags: []}\n", "devices[0].slaves[2].tags: a slave needs at least one tag"),
    ("      - {unit_id: 3, timeout: 0, tags: [{name: X, address: 0}]}\n",
     "devices[0].slaves[2].timeout: must be longer than zero"),
    ("      - {unit_id: 3, tags: [{name: X, adress: 0}]}\n",
     "devices[0].slaves[2].tags[0].adress: unknown key 'adress'; did you mean 'address'?"),
])
def test_slave_errors_name_their_line_and_path(tmp_path, slave, expected):
    found = errors(HEAD + SLAVES + slave, tmp_path)
    assert any(error.startswith(f"16: {expected}") for error in found), found


def test_tag_names_are_unique_across_slaves(tmp_path):
    text = HEAD + SLAVES.replace("name: PT2", "name: PT1")
    assert "15: devices[0].slaves[1].tags[0].name: tag 'PT1' is already defined at line 11" in errors(text, tmp_path)


def doc_examples(heading: str) -> list[str]:
    """The YAML examples of one section of docs/drivers.md, as complete configs."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "drivers.md").read_text()
    section = doc.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    head = "gateway: {id: GW-DOC}\nuplink: {host: broker, signing_key: k}\n"
    return [head + (block if block.startswith("devices:") else "devices:\n" + block)
            for block in blocks if "driver:" in block]


@pytest.mark.parametrize("heading", ["Modbus TCP", "Modbus RTU, Modbus UDP and RTU over TCP"])
def test_the_documented_examples_are_valid(tmp_path, heading):
    examples = doc_examples(heading)
    assert examples
    for example in examples:
        assert parse(example, tmp_path).devices
