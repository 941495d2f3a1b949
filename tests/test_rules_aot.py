"""The rule kernels compiled ahead of time (rules.kernels): the daemon runs them without numba, a stale
build is never used, and a wrong argument fails in both ways of running them. That the built kernels
compute what the references do is the property tests' job (the `compiled` fixture runs them on both)."""

from __future__ import annotations

import ast
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rules.kernels.load
from rules.kernels.load import load, module_path
from rules.kernels.signatures import KERNELS, ROOT, SOURCES

# Every kernel has work: limit, rate, deviation, discrete, quality and expression alarms, an interlock.
PLANT = """
gateway: {id: GW-AOT, state_dir: $DIR/state, cache_dir: $DIR/cache, runtime_dir: $DIR/run}
devices:
  - name: plc
    driver: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: TT101, address: 0, alarms: {hh: 95, h: 85, deadband: 1}}
      - {name: TT102, address: 1}
      - {name: FT101, address: 2}
      - {name: FIC101_SP, address: 3}
      - {name: P101_RUN, address: 4}
      - {name: XS101, address: 5}
uplink: {host: 127.0.0.1, signing_key: $DIR/key}
rules:
  units: {U100: {max_bypassed: 1}}
  interlocks:
    - {id: SIS-101, unit: U100, bypass: XS101, trip: "TT101 >= 140", max_bypass: 8h}
  alarms:
    - {id: TT102_ROC, rate: {tag: TT102, limit: 5, per: minute, window: 30s, direction: rise}}
    - {id: FT101_DEV, deviation: {tag: FT101, reference: FIC101_SP, limit: 5, deadband: 1}}
    - {id: P101_TRIPPED, discrete: {tag: P101_RUN, state: 0}}
    - {id: FT101_BAD, quality: {tag: FT101, trigger: bad_or_stale}}
    - {id: HOT, when: "TT101 > TT102 / 0", for: 5s}
"""

# In a fresh interpreter: the daemon module imported, the engine and the scan's report kernel run over
# the config argv[2], with the kernels of the directory argv[1].
DAEMON_WITHOUT_NUMBA = """
import functools, json, sys, time
from pathlib import Path
import numpy as np
import rules.kernels.load as kernel_load
kernel_load.kernels = functools.cache(lambda: kernel_load.load(Path(sys.argv[1])))
import gatewayd.daemon
from gatewayd.config import load_config
from gatewayd.config.model import point_tags
from gatewayd.values.points import PointTable
from gatewayd.values.scan import build_engine
config = load_config(Path(sys.argv[2]))
table = PointTable(point_tags(config))
engine = build_engine(config, table)
table.value[:] = 1.0
table.quality[:] = 0
for name, value in {"TT101": 99.0, "P101_RUN": 0.0, "XS101": 1.0}.items():
    table.value[table.rows[name]] = value
events = engine.evaluate(table.value, table.quality, time.monotonic(), time.time(), table.updated, table.gateway_ts)
n = len(table)
count = kernel_load.kernels().select_reports(
    table.value, table.quality, table.updated, time.monotonic(), np.zeros(n), np.full(n, 60.0), table.every_read,
    np.full(n, np.nan), np.full(n, 255, np.uint8), np.full(n, -np.inf), np.full(n, -np.inf), np.zeros(n, np.int64))
print(json.dumps({"origin": kernel_load.kernels().origin, "reported": int(count), "bypassed": engine.bypassed.tolist(),
                  "active": sorted(alarm["id"] for alarm in engine.alarms()),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))}))
"""


def test_the_daemon_with_the_built_kernels_never_imports_numba(built_kernels, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(PLANT.replace("$DIR", str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", DAEMON_WITHOUT_NUMBA, str(built_kernels), str(config)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["origin"].startswith("ahead-of-time build"), result
    assert result["active"] == ["P101_TRIPPED", "TT101.H", "TT101.HH"] and result["bypassed"] == [1], result
    assert result["reported"] == 7, result
    assert result["loaded"] == [], result


def test_a_stale_build_falls_back_to_numba_with_one_warning(built_kernels, tmp_path, monkeypatch, caplog):
    shutil.copy(module_path(built_kernels), module_path(tmp_path))
    assert load(tmp_path).origin.startswith("ahead-of-time build")
    monkeypatch.setattr(rules.kernels.load, "fingerprint", lambda: "0" * 64)  # the sources changed since
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rules.kernels"):
        kernels = load(tmp_path)
    assert kernels.origin == "numba just in time"
    assert [(r.levelno, "is stale" in r.getMessage() and "python -m rules.kernels.build" in r.getMessage())
            for r in caplog.records] == [(logging.WARNING, True)]
    values, quality = np.array([5.0, 1.0]), np.zeros(2, np.uint8)
    cond, raw = np.zeros(2, np.uint8), np.zeros(2, np.uint8)
    kernels.limit_conditions(values, quality, np.array([0, 1]), np.array([3.0, 3.0]), np.zeros(2),
                             np.ones(2, np.bool_), cond, raw)
    assert raw.tolist() == [1, 0]


def test_no_build_at_all_runs_numba_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rules.kernels"):
        kernels = load(tmp_path)
    assert kernels.origin == "numba just in time"
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "no ahead-of-time build" in caplog.text


def limit_arguments(**changes):
    args = {"values": np.array([5.0, 1.0]), "quality": np.zeros(2, np.uint8), "rows": np.array([0, 1]),
            "setpoint": np.array([3.0, 3.0]), "deadband": np.zeros(2), "high": np.ones(2, np.bool_),
            "cond": np.zeros(2, np.uint8), "raw": np.zeros(2, np.uint8)}
    return list({**args, **changes}.values())


@pytest.mark.parametrize(("change", "message"), [
    ({"values": np.array([5, 1])}, "values must be a C-contiguous 1-d float64 array, not a C-contiguous 1-d int64"),
    ({"rows": np.array([0, 1], np.int32)}, "rows must be a C-contiguous 1-d int64 array"),
    ({"raw": np.zeros(4, np.uint8)[::2]}, "raw must be .* not a non-contiguous 1-d uint8 array"),
    ({"high": [True, True]}, "high must be .* not list"),
    ({"quality": np.zeros((2, 1), np.uint8)}, "quality must be a C-contiguous 1-d uint8 array, not a C-contiguous 2-d"),
])
def test_a_wrong_array_fails_loudly_in_both_builds(compiled, change, message):
    args = limit_arguments(**change)
    with pytest.raises(TypeError, match=f"limit_conditions: {message}"):
        compiled.limit_conditions(*args)
    assert not args[-1].any(), "nothing was written"


def test_a_scalar_that_is_no_number_fails_loudly(compiled):
    with pytest.raises(TypeError, match="select_reports: now must be a number, not str"):
        compiled.select_reports(np.zeros(1), np.zeros(1, np.uint8), np.zeros(1), "1.0", np.zeros(1), np.zeros(1),
                                np.zeros(1, np.bool_), np.zeros(1), np.zeros(1, np.uint8), np.zeros(1), np.zeros(1),
                                np.zeros(1, np.int64))


def test_the_fingerprint_covers_every_module_the_kernels_import():
    """A constant a kernel takes from a plain module is frozen into the build: editing that module must
    make the build stale, so it must be among the fingerprinted sources."""
    imported = set()
    for kernel in {kernel.module for kernel in KERNELS.values()}:
        path = f"rules/kernels/{kernel}.py"
        assert path in SOURCES
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("rules", "core"):
                imported.add(node.module.replace(".", "/") + ".py")
    assert imported and imported <= set(SOURCES), imported - set(SOURCES)
    assert all((ROOT / source).is_file() for source in SOURCES)


def test_every_kernel_is_exported_by_the_build(built_kernels):
    module = rules.kernels.load.import_built(module_path(built_kernels))
    assert sorted(name for name in dir(module) if not name.startswith("_")) == sorted([*KERNELS, "fingerprint"])
    assert Path(module.__file__) == module_path(built_kernels)
