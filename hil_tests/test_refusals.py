"""The daemon refuses to start, with a message naming the cause, rather than run half-configured."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil_tests.harness import make_key, plant_config, run_cli

BAD = sorted((Path(__file__).parent.parent / "tests" / "configs" / "bad").glob("*.yaml"))


@pytest.mark.parametrize("path", BAD, ids=[path.stem for path in BAD])
def test_daemon_refuses_a_broken_config_naming_the_line(path: Path, tmp_path: Path):
    config = tmp_path / path.name
    shutil.copy(path, config)
    line = path.read_text().splitlines()[0].removeprefix("# expect: ").split(":")[0]
    result = run_cli("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert "configuration invalid, not starting" in result.stderr
    assert f"{config}:{line}:" in result.stderr


def test_daemon_refuses_a_signing_key_others_can_read(tmp_path: Path):
    config = plant_config(tmp_path, plc_port=1502, broker_port=1883, tags=3)
    key, _ = make_key(tmp_path)
    key.chmod(0o644)
    result = run_cli("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert str(key) in result.stderr and "chmod 600" in result.stderr
    assert "PRIVATE KEY" not in result.stderr + result.stdout
