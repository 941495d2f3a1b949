"""A kernel index planted in numba's cache by another account does not run (issue 12, finding 4).

The real daemon fills its own kernel cache; then every index file (.nbi) in it is replaced by a
pickle that would create a marker directory when unpickled, and handed to another account, as a
local attacker with write access to the directory would leave it. The next start must refuse the
cache with one warning, compile its kernels elsewhere, run normally, and never unpickle the plant.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

from hil_tests.conftest import Plant
from hil_tests.harness import SHARED_NUMBA_CACHE, Daemon
from hil_tests.test_end_to_end import samples_by_tag
from hil_tests.test_gds import wait_upstream

NOBODY = 65534


class Planted:
    """Unpickling this makes a directory: proof that code from the cache file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker), 0o700, True)  # then numba sees no index and compiles on


def start_with_kernel_cache(plant: Plant, cache: Path) -> Daemon:
    daemon = Daemon(plant.workdir, plant.config)
    daemon.env["NUMBA_CACHE_DIR"] = str(cache)
    daemon.env["GATEWAYD_RULE_KERNELS"] = "jit"  # numba's path, which has a cache, not the kernels built ahead
    plant.daemons.append(daemon)
    return daemon.start()


def run_until_data_flows(plant: Plant, cache: Path) -> str:
    """Start, wait for fresh samples upstream, stop cleanly; the daemon's log of this run."""
    before = sum(len(rows) for rows in samples_by_tag(plant).values())
    daemon = start_with_kernel_cache(plant, cache)
    wait_upstream(plant, lambda samples: sum(len(rows) for rows in samples.values()) > before + 10,
                  "samples from this run", timeout=180)
    assert daemon.stop() == 0
    return daemon.log_text()


def test_a_planted_foreign_kernel_index_is_refused_and_never_unpickled(plant_factory, tmp_path):
    plant = plant_factory(tags=4, poll_interval=0.25, scan_interval=0.25)
    cache = tmp_path / "kernels"
    if SHARED_NUMBA_CACHE.is_dir():  # what other tests compiled: spares a cold compile, changes nothing else
        shutil.copytree(SHARED_NUMBA_CACHE, cache)
        cache.chmod(0o700)

    log = run_until_data_flows(plant, cache)
    assert "numba kernel cache" not in log, "the daemon's own cache is used"
    indexes = sorted(cache.rglob("*.nbi"))
    assert indexes, "the run left its kernel indexes in the cache"

    marker = tmp_path / "planted-code-ran"
    for index in indexes:
        index.write_bytes(pickle.dumps(Planted(marker)))
        os.chown(index, NOBODY, NOBODY)
    log = run_until_data_flows(plant, cache)[len(log):]
    assert not marker.exists(), "the planted index was unpickled"
    (warning,) = [line for line in log.splitlines() if "numba kernel cache" in line]
    assert f"numba kernel cache {cache} not used" in warning and f"is owned by uid {NOBODY}" in warning
    private = Path(warning.rsplit(" compile into ", 1)[1].split(" for this run only")[0])
    assert private.name.startswith("gatewayd-kernels-") and not private.exists(), "removed at exit"
