"""GDS profiles, panel device config, and what a channel's registers mean."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from drivers.gds.panel import read_channel, unit_mismatch
from drivers.gds.profile import PROFILE_DIR, load_profile, shipped_profiles
from drivers.modbus.codec import BlockDecoder
from drivers.modbus.plan import plan_blocks
from gatewayd.config import ConfigError, parse_config
from core.types import Quality

HEAD = """gateway: {id: GW-GDS}
uplink: {host: broker, signing_key: k}
devices:
  - name: gds1
    driver: gds
"""
TCP = """    transport: tcp
    host: 10.0.0.9
    profile: generic
"""
CHANNELS = """    channels:
      - {channel: 1, name: GT101, gas: methane, unit: "%LEL"}
      - {channel: 9, name: GT109, gas: H2S, unit: ppm}
"""


def errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "gds.yaml")
    return [str(issue).removeprefix(f"{tmp_path / 'gds.yaml'}:") for issue in caught.value.issues]


@pytest.mark.parametrize("name", ["generic", "midas", "vortex"])
def test_shipped_profiles_are_valid(name):
    assert name in shipped_profiles()
    profile, issues = load_profile(PROFILE_DIR / f"{name}.yaml")
    assert issues == () and profile.alarms[1] and profile.concentration in profile.fields


def test_channels_become_concentration_alarm_and_fault_tags(tmp_path):
    device = parse_config(HEAD + TCP + CHANNELS, tmp_path / "gds.yaml").devices[0]
    assert [tag.name for tag in device.tags] == ["GT101", "GT101.alarm", "GT101.fault",
                                                 "GT109", "GT109.alarm", "GT109.fault"]
    assert device.tags[0].unit == "%LEL" and device.tags[0].address.gas == "methane"
    assert [tag.address.role for tag in device.tags[:3]] == ["concentration", "alarm", "fault"]


def test_rtu_panels_take_the_profiles_serial_defaults(tmp_path):
    rtu = "    transport: rtu\n    serial_port: /dev/ttyUSB1\n    profile: vortex\n"
    serial = parse_config(HEAD + rtu + CHANNELS, tmp_path / "gds.yaml").devices[0].settings.serial
    assert (serial.baud, serial.parity, serial.stop_bits, serial.max_block) == (9600, "N", 2, 100)


@pytest.mark.parametrize("device, channels, expected", [
    ("    transport: tcp\n    profile: generic\n", CHANNELS, "4: devices[0].host: transport tcp needs host"),
    (TCP.replace("generic", "nope"), CHANNELS, "4: devices[0].profile: no shipped profile 'nope'"),
    (TCP + "    baud: 9600\n", CHANNELS, "4: devices[0].baud: baud is for transport rtu"),
    (TCP, CHANNELS.replace("channel: 9", "channel: 1"), "11: devices[0].channels[1].channel: channel 1 is already"),
    (TCP, CHANNELS.replace("channel: 9", "channel: 17"), "11: devices[0].channels[1].channel: profile generic has "
                                                          "channels 1..16"),
    (TCP, CHANNELS.replace('unit: "%LEL"', "unit: m"), "10: devices[0].channels[0].unit: a gas channel needs its unit"),
])
def test_panel_errors_name_line_and_key(tmp_path, device, channels, expected):
    found = errors(HEAD + device + channels, tmp_path)
    assert any(error.startswith(expected) for error in found), found


def test_an_integrators_profile_is_checked_with_its_own_lines(tmp_path):
    source = (PROFILE_DIR / "generic.yaml").read_text().replace("fault: {field: status, bit: 3}",
                                                                "fault: {field: nowhere, bit: 3}")
    (tmp_path / "panels").mkdir()
    (tmp_path / "panels" / "mine.yaml").write_text(source)
    device = TCP.replace("profile: generic", "profile_file: panels/mine.yaml")
    found = errors(HEAD + device + CHANNELS, tmp_path)
    line = source.splitlines().index("fault: {field: nowhere, bit: 3}") + 1
    assert any(f"panels/mine.yaml:{line}: fault.field: 'nowhere' is not an int16 or uint16 field" in error
               for error in found), found
    good = (PROFILE_DIR / "generic.yaml").read_text().replace("name: generic", "name: mine")
    (tmp_path / "panels" / "good.yaml").write_text(good)
    config = parse_config(HEAD + TCP.replace("profile: generic", "profile_file: panels/good.yaml") + CHANNELS,
                          tmp_path / "gds.yaml")
    assert config.devices[0].settings.profile.name == "mine"


GENERIC = load_profile(PROFILE_DIR / "generic.yaml")[0]
MIDAS = load_profile(PROFILE_DIR / "midas.yaml")[0]
GOOD = {"concentration": 0, "status": 0, "fault_code": 0}


def generic(concentration: float, status: int, code: int = 0, qualities: dict | None = None):
    return read_channel(GENERIC, {"concentration": concentration, "status": status, "fault_code": code},
                        {**GOOD, **(qualities or {})})


@pytest.mark.parametrize("status, code, quality, level, fault_code, mode", [
    (0b0000000, 0, Quality.GOOD, 0, 0, None),
    (0b0000011, 0, Quality.GOOD, 2, 0, None),
    (0b0001000, 77, Quality.SENSOR_FAULT, 0, 77, None),
    (0b0001000, 0, Quality.SENSOR_FAULT, 0, 1, None),  # a fault without a code still shows as one
    (0b0010001, 0, Quality.MAINTENANCE, 1, 0, "inhibit"),
    (0b0100000, 0, Quality.MAINTENANCE, 0, 0, "calibration"),
    (0b1000000, 0, Quality.MAINTENANCE, 0, 0, "bump_test"),
    (0b0101000, 5, Quality.SENSOR_FAULT, 0, 5, "calibration"),  # a fault outranks maintenance
])
def test_generic_channel_states(status, code, quality, level, fault_code, mode):
    reading = generic(12.5, status, code)
    assert (reading.quality, reading.alarm_level, reading.fault_code, reading.mode) == \
        (quality, level, fault_code, mode)


def test_unreadable_status_makes_the_channel_bad_with_its_cause():
    reading = generic(12.5, 0, qualities={"status": Quality.DEVICE_ERROR})
    assert reading.quality == Quality.DEVICE_ERROR and reading.status_quality == Quality.DEVICE_ERROR
    assert generic(math.nan, 0).quality == Quality.OUT_OF_RANGE


def test_the_documented_panel_and_profile_examples_are_valid(tmp_path):
    from tests.test_rtu_config import doc_examples

    (example,) = doc_examples("Gas-detection panels")
    config = parse_config(example, tmp_path / "gds.yaml")
    assert [len(device.tags) for device in config.devices] == [6, 3] and len(config.rules.gas) == 2
    doc = (Path(__file__).resolve().parents[1] / "docs" / "drivers.md").read_text()
    profile = doc.split("### Profiles", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-panel.yaml").write_text(profile)
    loaded, issues = load_profile(tmp_path / "my-panel.yaml")
    assert issues == () and loaded.modes["calibration"].equals == (0x0200, 0x0400)
    assert loaded.unit.bits == {12: "ppm", 13: "%LEL"} and loaded.thresholds == {1: "limit1"}


MIDAS_FIELDS = {"status": 1, "concentration": 3.0, "fault_number": 0, "units": 0x0101, "alarm1_threshold": 10.0,
                "alarm2_threshold": 20.0}
MIDAS_GOOD = dict.fromkeys(MIDAS_FIELDS, 0)


def midas(unit: str = "ppm", **values):
    return read_channel(MIDAS, {**MIDAS_FIELDS, **values}, MIDAS_GOOD, unit)


@pytest.mark.parametrize("state, mode", [(1, None), (3, "inhibit"), (6, "bump_test"), (8, "calibration")])
def test_midas_monitor_state_is_an_enumeration(state, mode):
    reading = midas(status=state | 0x80)
    assert reading.mode == mode and reading.alarm_level == 2


def cdab(value: float) -> list[int]:
    """An IEEE float as the Midas manual's two registers, low word first (written here, not taken from the profile)."""
    high, low = struct.unpack(">2H", struct.pack(">f", value))
    return [low, high]


def test_midas_floats_are_read_low_word_first():
    """40003-40004 and 40013-40016 as a detector sends them decode to the detector's numbers."""
    registers = [0x0001, 0, *cdab(12.5), 125, 0, 0x0101, 21, 8760, 42, 500, 0, *cdab(10.0), *cdab(20.0)]
    names = list(MIDAS.fields)
    addresses = [MIDAS.address(1, name) for name in names]
    (block,) = plan_blocks(addresses, 10, MIDAS.max_block)
    decoded = dict(zip(names, BlockDecoder(block, addresses).decode(registers)))
    assert decoded["concentration"] == 12.5
    assert (decoded["alarm1_threshold"], decoded["alarm2_threshold"]) == (10.0, 20.0)
    assert decoded["units"] == 0x0101


@pytest.mark.parametrize("code, configured, reported, quality", [
    (0x0101, "ppm", "ppm", Quality.GOOD),  # bits 0-2 (the decimal point) are not the unit
    (0x0800, "%LEL", "%LEL", Quality.GOOD),
    (0x0200, "ppm", "ppb", Quality.DEVICE_ERROR),
    (0x1000, "ppm", "mA", Quality.DEVICE_ERROR),
    (0x0000, "ppm", None, Quality.DEVICE_ERROR),  # no unit bit set
    (0x0300, "ppm", None, Quality.DEVICE_ERROR),  # two unit bits set
])
def test_the_detectors_unit_must_be_the_channels(code, configured, reported, quality):
    reading = midas(configured, units=code)
    assert (reading.reported_unit, reading.quality, reading.unit_mismatch) == \
        (reported, quality, quality == Quality.DEVICE_ERROR)
    assert {level: q for level, (_, q) in reading.thresholds.items()} == {1: quality, 2: quality}
    assert reading.status_quality == Quality.GOOD and reading.unit_code == code


def test_a_unit_mismatch_outranks_a_fault_and_names_both_units():
    reading = midas("ppm", units=0x0200, status=0x21)  # maintenance fault, ppb
    assert reading.quality == Quality.DEVICE_ERROR and reading.fault
    assert unit_mismatch(reading, "ppm") == "the detector reports ppb, the channel is configured in ppm"
    assert "code 0x0000 names none or several" in unit_mismatch(midas("ppm", units=0), "ppm")


def test_midas_channels_get_threshold_tags_in_their_unit(tmp_path):
    midas_device = "    transport: tcp\n    host: 10.0.0.9\n    profile: midas\n    channels:\n" \
                   "      - {channel: 1, name: GT301, gas: H2S, unit: ppm}\n"
    config = parse_config(HEAD + midas_device, tmp_path / "gds.yaml")
    tags = {tag.name: tag for tag in config.devices[0].tags}
    assert list(tags) == ["GT301", "GT301.alarm", "GT301.fault", "GT301.threshold1", "GT301.threshold2"]
    assert tags["GT301.threshold2"].unit == "ppm" and tags["GT301.threshold2"].address.role == "threshold2"


@pytest.mark.parametrize("unit, message", [
    ("{field: units, bits: {8: furlongs}}", "unit.bits: expected a mapping of bit numbers 0-15 to units"),
    ("{field: units, bits: {16: ppm}}", "unit.bits: expected a mapping of bit numbers 0-15"),
    ("{field: concentration, bits: {8: ppm}}", "unit.field: 'concentration' is not an int16 or uint16 field"),
])
def test_a_bad_unit_code_in_a_profile_names_its_line(tmp_path, unit, message):
    text = (PROFILE_DIR / "midas.yaml").read_text()
    lines = text.splitlines()
    at = next(index for index, line in enumerate(lines) if line.startswith("unit:"))
    lines[at] = f"unit: {unit}"
    (tmp_path / "bad.yaml").write_text("\n".join(lines) + "\n")
    profile, issues = load_profile(tmp_path / "bad.yaml")
    assert profile is None and any(issue.line == at + 1 and message in str(issue) for issue in issues), issues
