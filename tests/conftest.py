"""Fixtures shared by the unit tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from scanplant import FakeClock

import gatewayd.values.points
import gatewayd.values.scan
from rules.kernels.build import build
from rules.kernels.load import Kernels, is_current, jit_kernels, load, module_path


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The point table and the scan read this clock instead of the system's."""
    fake = FakeClock()
    monkeypatch.setattr(gatewayd.values.points, "time", fake)
    monkeypatch.setattr(gatewayd.values.scan, "time", fake)
    return fake


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A directory others may traverse (tmp_path is 0700), so permission tests test the socket's own."""
    top = Path(tempfile.mkdtemp(prefix="gatewayd-control-"))
    top.chmod(0o755)
    yield top / "run"
    for path in sorted(top.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    top.rmdir()


@pytest.fixture(scope="session")
def built_kernels(tmp_path_factory) -> Path:
    """A directory holding a current ahead-of-time build of the rule kernels: the package's own when
    `make venv` left it current, else one built for this session."""
    if is_current():
        return module_path().parent
    return build(tmp_path_factory.mktemp("kernels")).parent


@pytest.fixture(scope="session", params=["just_in_time", "ahead_of_time"])
def compiled(request) -> Kernels:
    """Each way the rule kernels run: numba's JIT, and the ahead-of-time build."""
    if request.param == "just_in_time":
        return jit_kernels()
    kernels = load(request.getfixturevalue("built_kernels"))
    assert kernels.origin.startswith("ahead-of-time build"), kernels.origin
    return kernels
