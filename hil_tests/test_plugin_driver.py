"""A driver kind from outside the tree, through the real daemon: the worked example of docs/drivers.md.

The package `acme-tankbus` (hil_tests/plugins/acme_tankbus, its own pyproject.toml) is built and
pip-installed into a directory of its own, which the daemon and check-config get on PYTHONPATH: they
find the kind only through its `gatewayd.drivers` entry point in the installed metadata. The
concentrator simulator (`hil_tests.sim.tankbus`) serves known levels and a gauge in fault; what
arrives upstream is compared with what it served, and a concentrator that goes away makes the
device down upstream.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.types import Quality
from hil_tests.simprocess import SimProcess
from hil_tests.test_end_to_end import events_of, samples_by_tag
from hil_tests.test_gds import qualities, values, wait_upstream

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hil_tests" / "plugins" / "acme_tankbus"
LEVELS = {"TK101": (1, 12.5), "TK102": (2, 3.25)}
FAULTY = ("TK103", 3)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """acme-tankbus built and installed (as pip would for a user) into a directory of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PACKAGE, work / "source")  # the build writes its egg-info next to the sources
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(source)], check=True, cwd=work)
    assert list(target.glob("acme_tankbus-1.0.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def with_plugin(plugin_path: Path, monkeypatch) -> Path:
    """The daemon processes this test starts see the installed package (harness.Daemon copies os.environ)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")])))
    return plugin_path


def tankbus_device(port: int, **extra) -> dict:
    tags = [{"name": name, "channel": channel, "unit": "m", "deadband": 0.0} for name, (channel, _) in LEVELS.items()]
    tags.append({"name": FAULTY[0], "channel": FAULTY[1], "unit": "m"})
    return {"name": "tank-farm-levels", "driver": "tankbus", "host": "127.0.0.1", "port": port,
            "poll_interval": 0.25, "timeout": 0.5, "backoff_initial": 0.2, "backoff_max": 0.5, "tags": tags, **extra}


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewayd", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=os.environ.copy())


def test_check_config_validates_the_plugin_section_with_line_numbers(plant_factory, with_plugin):
    plant = plant_factory(tags=4, extra_devices=[tankbus_device(4196, backoff_max=0.1)])
    document = yaml.safe_load(plant.config.read_text())
    document["devices"][1]["tags"][1]["channel"] = 100
    plant.config.write_text(yaml.safe_dump(document, sort_keys=False))
    lines = plant.config.read_text().splitlines()
    channel_line = next(number for number, text in enumerate(lines, 1) if "channel: 100" in text)
    result = check_config(plant.config)
    assert result.returncode != 0
    assert f"{plant.config}:{channel_line}: devices[1].tags[1].channel:" in result.stderr + result.stdout
    assert "backoff_max must be at least backoff_initial" in result.stderr + result.stdout


def test_check_config_without_the_package_names_the_kinds(plant_factory):
    plant = plant_factory(tags=4, extra_devices=[tankbus_device(4196)])
    result = check_config(plant.config)
    assert result.returncode != 0
    assert "'tankbus' is not one of: modbus_tcp" in result.stderr + result.stdout


def test_plugin_values_arrive_upstream_and_an_outage_is_reported(plant_factory, with_plugin, sim_processes):
    levels = [f"{channel}={value}" for channel, value in LEVELS.values()]
    concentrator = sim_processes(SimProcess(["hil_tests.sim.tankbus"],
                                            [arg for level in levels for arg in ("--level", level)]
                                            + ["--fault", str(FAULTY[1])], "tankbus concentrator"))
    plant = plant_factory(tags=4, poll_interval=0.5, scan_interval=0.25,
                          extra_devices=[tankbus_device(concentrator.port)])
    assert check_config(plant.config).returncode == 0
    plant.start_daemon()
    wait_upstream(plant, lambda s: all(Quality.GOOD in qualities(s, tag) for tag in LEVELS)
                  and Quality.SENSOR_FAULT in qualities(s, FAULTY[0]), "the concentrator's levels")
    upstream = samples_by_tag(plant)
    for tag, (_, level) in LEVELS.items():
        good = {value for _, value, quality in upstream[tag] if quality == Quality.GOOD}
        assert good == {level}, tag

    concentrator.signal(signal.SIGKILL)
    wait_upstream(plant, lambda s: Quality.COMM_FAILURE in qualities(s, "TK101"), "COMM_FAILURE after the outage")
    wait_upstream(plant, lambda s: [event for event in events_of(plant, "device_down")
                                    if event["source"] == "tank-farm-levels"], "the device_down event")
    assert set(values(samples_by_tag(plant), FAULTY[0])) <= {None}, "a gauge in fault never sent a value"
