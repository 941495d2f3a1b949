"""A secret file loosened while the daemon runs: the next reload is refused naming it, and the next start
is refused too although the compiled-config cache lets it skip the parse (issue 12, finding 7)."""

from __future__ import annotations

import signal
import time

from gatewayd.config import load_config_isolated
from gatewayd.config.cache import ConfigCache
from hil_tests.harness import run_cli
from hil_tests.test_end_to_end import events_of
from hil_tests.test_gds import wait_upstream


def test_a_password_loosened_while_running_refuses_reload_and_restart(plant_factory, monkeypatch, tmp_path):
    cache_root = tmp_path / "systemd-cache"  # as the unit's CacheDirectory=: the compiled-config cache is on
    cache_root.mkdir()
    monkeypatch.setenv("CACHE_DIRECTORY", str(cache_root))
    password = tmp_path / "broker.password"
    password.write_text("secret\n")
    password.chmod(0o600)
    plant = plant_factory(tags=4, poll_interval=0.5, scan_interval=0.25,
                          uplink={"username": "gateway", "password_file": str(password)})
    daemon = plant.start_daemon()
    wait_upstream(plant, lambda samples: bool(samples), "the first samples")

    password.chmod(0o644)
    with plant.config.open("a") as config:
        config.write("# edited\n")  # a reload of an unchanged file has nothing to apply
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not events_of(plant, "config_rejected"):
        assert time.monotonic() < deadline, "no config_rejected upstream"
        time.sleep(0.5)
    (rejected,) = events_of(plant, "config_rejected")
    expected = (f"{password} (broker password file) has mode 0644: group and others must not read or write it; "
                f"fix with: chmod 600 {password}")
    [error] = rejected["data"]["errors"]  # the edited file is parsed again: check-config's error, with its line
    assert error.startswith(f"{plant.config}:") and error.endswith(f": uplink.password_file: {expected}")
    assert daemon.stop() == 0

    password.chmod(0o600)
    load_config_isolated(plant.config)  # what a start of the edited file leaves in the compiled-config cache
    assert ConfigCache(plant.config, plant.config.read_bytes()).read() is not None
    password.chmod(0o644)
    result = run_cli("run", "-c", str(plant.config), timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "configuration invalid" not in result.stderr, "refused by the start check, the parse came from the cache"
