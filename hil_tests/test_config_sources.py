"""A GDS profile edit reaches the running daemon: through a reload and through a restart that finds the
compiled-config cache, and `config_sha256` upstream changes with it (issue 12, finding 3).

The panel simulator serves the generic map; the daemon reads it through a copy of the shipped profile
given as `profile_file`. Each channel of the panel holds its own concentration, so moving the
profile's `first_address` by one channel block (8 registers) makes channel 1's tag read the next
channel's value: the value upstream says which map the daemon really uses.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.gds.profile import PROFILE_DIR
from gatewayd.config.cache import ConfigCache
from hil_tests.test_end_to_end import events_of, samples_by_tag, wait_quiet
from hil_tests.test_gds import PanelProcess, values, wait_upstream

TAG = "GT101"
# the concentration of panel channels 1, 2, 3, which profiles with first_address 100, 108, 116 read as channel 1
CONCENTRATIONS = {100: 31.0, 108: 17.0, 116: 9.0}


@pytest.fixture
def generic_panel() -> Iterator[PanelProcess]:
    process = PanelProcess()
    yield process
    process.close()


def gds_device(port: int) -> dict:
    return {"name": "gds-own", "driver": "gds", "transport": "tcp", "host": "127.0.0.1", "port": port,
            "profile_file": "panels/own.yaml", "poll_interval": 0.25, "timeout": 0.5, "heartbeat_timeout": 5,
            "channels": [{"channel": 1, "name": TAG, "gas": "methane", "unit": "%LEL", "range": [0, 100]}]}


def write_profile(workdir: Path, first_address: int) -> Path:
    text = (PROFILE_DIR / "generic.yaml").read_text()
    assert "first_address: 100 " in text
    profile = workdir / "panels" / "own.yaml"
    profile.parent.mkdir(exist_ok=True)
    profile.write_text(text.replace("first_address: 100 ", f"first_address: {first_address} "))
    return profile


def recomputed_sha256(*files: Path) -> str:
    """docs/uplink.md: the SHA-256 of the files' hex SHA-256s, one a line, main file first."""
    lines = "".join(hashlib.sha256(file.read_bytes()).hexdigest() + "\n" for file in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def near(value: float | None, concentration: float) -> bool:
    """The panel adds a little noise (under 0.5) to each concentration."""
    return value is not None and abs(value - concentration) < 0.5


def reads(first_address: int):
    return lambda samples: any(near(value, CONCENTRATIONS[first_address]) for value in values(samples, TAG))


def test_a_profile_edit_reaches_reload_and_restart(plant_factory, generic_panel, monkeypatch, tmp_path):
    panel = generic_panel
    for channel, concentration in enumerate(CONCENTRATIONS.values(), start=1):
        panel.send(f"gas {channel} {concentration}")
    cache_root = tmp_path / "systemd-cache"  # as the unit's CacheDirectory=: the compiled-config cache is on
    cache_root.mkdir()
    monkeypatch.setenv("CACHE_DIRECTORY", str(cache_root))
    plant = plant_factory(tags=4, poll_interval=0.5, scan_interval=0.25, extra_devices=[gds_device(panel.port)])
    profile = write_profile(plant.workdir, 100)

    daemon = plant.start_daemon()
    wait_upstream(plant, reads(100), "channel 1 through first_address 100", timeout=90)
    assert ConfigCache(plant.config, plant.config.read_bytes()).read() is not None, "the start stored its config"

    write_profile(plant.workdir, 108)  # the main file is untouched
    daemon.signal(signal.SIGHUP)
    wait_upstream(plant, reads(108), "channel 2's value after the reload (first_address 108)", timeout=90)
    (reloaded,) = events_of(plant, "config_reloaded")
    assert reloaded["data"]["changes"]["devices_restarted"] == ["gds-own"]
    assert reloaded["data"]["config_sha256"] == recomputed_sha256(plant.config, profile)
    assert reloaded["data"]["config_sha256"] != reloaded["data"]["previous_sha256"]
    assert daemon.stop() == 0

    write_profile(plant.workdir, 116)
    daemon = plant.start_daemon()
    wait_upstream(plant, reads(116), "channel 3's value after the restart (first_address 116)", timeout=90)
    assert daemon.stop() == 0
    wait_quiet(plant)

    first, second = (event["data"] for event in events_of(plant, "gateway_started"))
    assert second["config_sha256"] == recomputed_sha256(plant.config, profile) != first["config_sha256"]
    assert [entry["path"] for entry in second["config_files"]] == [str(plant.config.resolve()),
                                                                   str(profile.resolve())]
    assert first["config_sha256"] != reloaded["data"]["config_sha256"] != second["config_sha256"]
    seen = [next(at for at, value in enumerate(values(samples_by_tag(plant), TAG)) if near(value, concentration))
            for concentration in CONCENTRATIONS.values()]
    assert seen == sorted(seen), "the map moved with each edit, in order"
    assert near(values(samples_by_tag(plant), TAG)[-1], CONCENTRATIONS[116]), "never back to an old map"
