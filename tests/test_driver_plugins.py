"""Driver kinds from installed packages (entry point group `gatewayd.drivers`), at config time.

A distribution is faked the way pip leaves one: a `*.dist-info` directory with METADATA and
entry_points.txt on sys.path, next to the modules it names. Its working kind is the worked example
of docs/drivers.md (hil_tests/plugins/acme_tankbus); the others are broken on purpose.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import drivers
from drivers import plugins
from gatewayd.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "hil_tests" / "plugins" / "acme_tankbus"
MINIMAL = (Path(__file__).parent / "configs" / "good" / "minimal.yaml").read_text()
ENTRY_POINTS = """\
[gatewayd.drivers]
tankbus = acme_tankbus.config
broken = fakeplug_broken
incomplete = fakeplug_incomplete
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    site = tmp_path / "site"
    fake_distribution(site, "fakeplug", ENTRY_POINTS)
    (site / "fakeplug_broken.py").write_text("import a_module_nobody_installed\n")
    (site / "fakeplug_incomplete.py").write_text("DEVICE_FIELDS = {}\nTAG_FIELDS = {}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    before = set(sys.modules)
    plugins.registered.cache_clear()
    yield site
    plugins.registered.cache_clear()
    plugins._load.cache_clear()
    for name in set(sys.modules) - before:
        if name.startswith(("acme_tankbus", "fakeplug_")):
            del sys.modules[name]


def fake_distribution(site: Path, name: str, entry_points: str) -> None:
    dist_info = site / f"{name}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(entry_points)
    plugins.registered.cache_clear()


def with_device(device: str) -> str:
    return MINIMAL.replace("uplink:\n", device + "uplink:\n")


TANKBUS = """\
  - name: levels
    driver: tankbus
    host: 10.0.0.9
    tags:
      - name: LT201
        channel: 4
"""


def issues(source: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(source, tmp_path / "c.yaml")
    return [str(issue) for issue in caught.value.issues]


def line_of(source: str, text: str) -> int:
    return next(number for number, line in enumerate(source.splitlines(), 1) if text in line)


def test_a_kind_is_imported_only_when_a_config_names_it(installed, tmp_path):
    parse_config(MINIMAL, tmp_path / "c.yaml")
    assert "tankbus" in drivers.kinds() and "acme_tankbus" not in sys.modules
    config = parse_config(with_device(TANKBUS), tmp_path / "c.yaml")
    device = config.devices[-1]
    assert type(device.settings).__module__ == "acme_tankbus.config"
    assert (device.settings.port, device.tags[0].address.channel) == (4196, 4)
    assert type(drivers.create(device, np.arange(1))).__name__ == "TankbusDriver"


def test_its_section_gets_line_numbered_errors(installed, tmp_path):
    source = with_device(TANKBUS.replace("channel: 4", "channel: 0") + "    backoff_max: 0.1\n")
    found = issues(source, tmp_path)
    assert any(text.startswith(f"{tmp_path / 'c.yaml'}:{line_of(source, 'channel: 0')}: devices[1].tags[0].channel:")
               for text in found), found
    assert any("backoff_max must be at least backoff_initial" in text for text in found), found


def test_a_kind_clashing_with_a_built_in_one_is_named_where_used(installed, tmp_path):
    fake_distribution(installed, "clashing", "[gatewayd.drivers]\nmodbus_tcp = acme_tankbus.config\n")
    found = issues(MINIMAL, tmp_path)
    assert found == [f"{tmp_path / 'c.yaml'}:5: devices[0].driver: driver 'modbus_tcp' is built in, and package "
                     "clashing 1.0 (entry point modbus_tcp = acme_tankbus.config) registers it too: uninstall that "
                     "package or have it register another name"]


def test_a_kind_two_packages_register_is_refused(installed, tmp_path):
    fake_distribution(installed, "copycat", "[gatewayd.drivers]\ntankbus = acme_tankbus.config\n")
    found = issues(with_device(TANKBUS), tmp_path)
    assert any("driver 'tankbus' is registered more than once" in text and "copycat" in text and "fakeplug" in text
               for text in found), found


@pytest.mark.parametrize(("kind", "says"), [
    ("broken", "driver 'broken' from package fakeplug 1.0 (entry point broken = fakeplug_broken) fails to import: "
               "ModuleNotFoundError: No module named 'a_module_nobody_installed'"),
    ("incomplete", "module fakeplug_incomplete lacks build_settings, build_address, check_tags, DRIVER of the "
                   "driver contract"),
])
def test_an_unusable_kind_is_named_at_its_driver_line(installed, tmp_path, kind, says):
    source = with_device(TANKBUS.replace("driver: tankbus", f"driver: {kind}"))
    found = issues(source, tmp_path)
    expected = f"{tmp_path / 'c.yaml'}:{line_of(source, f'driver: {kind}')}: devices[1].driver: "
    assert any(text.startswith(expected) and says in text for text in found), found


def test_the_built_in_kind_is_unaffected_while_no_package_claims_it(tmp_path):
    plugins.registered.cache_clear()
    assert parse_config(MINIMAL, tmp_path / "c.yaml").devices[0].driver == "modbus_tcp"
    assert drivers.kinds()[:len(drivers.DRIVERS)] == list(drivers.DRIVERS)


def test_an_unknown_kind_lists_what_is_installed(installed, tmp_path):
    source = with_device(TANKBUS.replace("driver: tankbus", "driver: tankbuss"))
    found = issues(source, tmp_path)
    assert any("'tankbuss' is not one of: modbus_tcp" in text and "tankbus" in text for text in found), found


def test_the_compiled_config_cache_keys_on_the_sources_of_driver_packages(installed):
    from gatewayd.config.cache import code_digest

    (installed / "fakeplug-1.0.dist-info" / "RECORD").write_text("fakeplug_incomplete.py,,\n")
    plugins.registered.cache_clear()
    before = code_digest()
    assert code_digest() == before
    (installed / "fakeplug_incomplete.py").write_text("DEVICE_FIELDS = {'host': None}\nTAG_FIELDS = {}\n")
    assert code_digest() != before
