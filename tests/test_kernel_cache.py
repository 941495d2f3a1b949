"""Numba's kernel cache is used only where nobody else can have written it, and root runs only over its own
directories (issue 12, finding 4). The tests run as root, so they can hand files to another account."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatewayd.kernelcache import kernel_cache_problem
from gatewayd.trust import ForeignDirectoryError, refuse_root_over_foreign_directories, untrusted_path

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


@pytest.fixture
def cache(tmp_path) -> Path:
    """A kernel cache as a run leaves it: a subdirectory with an index and a compiled kernel."""
    directory = tmp_path / "cache" / "numba"
    assert kernel_cache_problem(directory) is None
    (directory / "rules").mkdir(mode=0o700)
    for name in ("isa.step-100.py311.nbi", "isa.step-100.py311.1.nbc"):
        (directory / "rules" / name).write_bytes(b"kernel")
    return directory


def test_a_new_cache_is_private_and_a_good_one_is_used(cache):
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert kernel_cache_problem(cache) is None, "everything in it is ours: used"


def test_a_file_planted_by_another_account_is_refused(cache):
    planted = cache / "rules" / "isa.step-100.py311.nbi"
    os.chown(planted, NOBODY, NOBODY)
    assert kernel_cache_problem(cache) == f"{planted} is owned by uid {NOBODY}"


def test_a_group_writable_directory_on_the_way_is_refused(cache):
    cache.parent.chmod(0o770)
    assert kernel_cache_problem(cache) == f"{cache.parent} is writable by others (mode 0770)"
    cache.parent.chmod(0o700)
    (cache / "rules").chmod(0o720)
    assert kernel_cache_problem(cache) == f"{cache / 'rules'} is writable by others (mode 0720)"


def test_a_directory_of_another_account_on_the_way_is_refused(cache):
    os.chown(cache.parent, NOBODY, NOBODY)
    assert kernel_cache_problem(cache) == f"{cache.parent} is owned by uid {NOBODY}"


def test_a_symbolic_link_inside_is_refused(cache, tmp_path):
    (cache / "rules" / "elsewhere.nbi").symlink_to(tmp_path / "anything")
    assert kernel_cache_problem(cache) == f"{cache / 'rules' / 'elsewhere.nbi'} is a symbolic link"


def test_only_a_root_owned_sticky_directory_may_be_writable_by_all_on_the_way(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: nobody may rename or remove what another account owns in it
    (shared / "mine").mkdir(mode=0o700)
    assert untrusted_path(shared / "mine") is None
    shared.chmod(0o777)
    assert untrusted_path(shared / "mine") == f"{shared} is writable by others (mode 0777)"
    shared.chmod(0o1777)
    os.chown(shared, NOBODY, NOBODY)
    assert untrusted_path(shared / "mine") == f"{shared} is owned by uid {NOBODY}", "sticky, but not root's"


def test_root_runs_only_over_directories_root_owns(tmp_path):
    own, foreign = tmp_path / "state", tmp_path / "cache"
    own.mkdir(mode=0o700)
    foreign.mkdir(mode=0o700)
    refuse_root_over_foreign_directories([own, tmp_path / "not-yet-made"])
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(ForeignDirectoryError, match=f"running as root, but {foreign} is owned by uid {NOBODY}"):
        refuse_root_over_foreign_directories([own, foreign])


def test_gatewayd_run_as_root_over_a_foreign_state_directory_exits_2(tmp_path):
    from tests.test_config_cache import CONFIGS

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    gatewayd = [sys.executable, "-m", "gatewayd"]
    subprocess.run([*gatewayd, "keygen", str(tmp_path / "signing.key")], cwd=ROOT, check=True, capture_output=True)
    document = yaml.safe_load((CONFIGS / "good" / "minimal.yaml").read_text())
    document["gateway"].update(state_dir=str(state), cache_dir=str(tmp_path / "cache"),
                               runtime_dir=str(tmp_path / "run"))
    document["uplink"]["signing_key"] = str(tmp_path / "signing.key")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    result = subprocess.run([*gatewayd, "run", "-c", str(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"running as root, but {state} is owned by uid {NOBODY}" in result.stderr


def test_numba_is_pointed_at_the_checked_cache_before_it_is_imported(tmp_path, cache):
    """In a fresh process, as the daemon starts: nothing `gatewayd run` imports before the check loads numba
    (the daemon module, which does, is imported after it), and numba then uses the checked directory, or a
    private one of its own when the check failed."""
    probe = ("import sys; from pathlib import Path\n"
             "import gatewayd.cli, gatewayd.config.load, gatewayd.kernelcache\n"
             "assert 'numba' not in sys.modules, 'numba imported before the check'\n"
             "from gatewayd.kernelcache import use_kernel_cache\n"
             "used = use_kernel_cache(Path(sys.argv[1]))\n"
             "from numba.core import config\n"
             "print(used, config.CACHE_DIR)\n")
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}

    def run() -> tuple[list[str], str]:
        result = subprocess.run([sys.executable, "-c", probe, str(cache.parent)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env=environment)
        assert result.returncode == 0, result.stderr
        return result.stdout.split(), result.stderr

    (used, numba_dir), log = run()
    assert used == numba_dir == str(cache) and "not used" not in log
    os.chown(cache / "rules" / "isa.step-100.py311.nbi", NOBODY, NOBODY)
    (used, numba_dir), log = run()
    assert used == numba_dir and Path(used).name.startswith("gatewayd-kernels-")
    assert log.count("numba kernel cache") == 1 and f"owned by uid {NOBODY}" in log
    assert not Path(used).exists(), "the private directory is removed at exit"
