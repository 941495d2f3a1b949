"""Numba's on-disk kernel cache, used only where nobody but the daemon's account can have written it.

Numba keeps the compiled rule kernels (`cache=True`) in $NUMBA_CACHE_DIR and unpickles its index
files (.nbi) without asking who wrote them: a file another account planted there runs code as the
daemon, as root when root starts the daemon by hand. So, before numba is first imported (a
function's cache directory is fixed when the function is decorated, at import):

- the directory is $NUMBA_CACHE_DIR when set, else `gateway.cache_dir/numba`, created 0700;
- it is used only when every component from it up to / belongs to the daemon's account or root and
  nobody else may write it, and everything in it belongs to the daemon's account, writable by nobody
  else, with no symbolic links (gatewayd.trust);
- otherwise the cache is off for this run, with one warning saying why: numba has no switch that
  turns the cache off for functions declared `cache=True` (with no usable directory it refuses to
  compile them), so it gets a fresh private directory (mkdtemp, 0700, removed at exit) and compiles
  the kernels as on a first start.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gatewayd.config.model import Config
from gatewayd.trust import refuse_root_over_foreign_directories, untrusted_path, untrusted_tree

log = logging.getLogger("gatewayd")


def kernel_cache_problem(directory: Path) -> str | None:
    """Create the directory (0700) if needed; why it may not be used as a kernel cache, or None."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return untrusted_path(directory) or untrusted_tree(directory)
    except OSError as exc:
        return f"unusable ({exc.strerror or exc})"


def use_kernel_cache(cache_dir: Path) -> Path:
    """Point numba at a kernel cache nobody else can have written (see above); the directory it uses."""
    if "numba" in sys.modules:
        raise RuntimeError("numba was imported before its kernel cache was checked")
    wanted = Path(os.environ.get("NUMBA_CACHE_DIR") or cache_dir / "numba")
    problem = kernel_cache_problem(wanted)
    if problem is None:
        directory = wanted.resolve()
    else:
        directory = Path(tempfile.mkdtemp(prefix="gatewayd-kernels-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        log.warning("numba kernel cache %s not used: %s; kernels compile into %s for this run only",
                    wanted, problem, directory)
    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    return directory


def prepare_start(config: Config) -> None:
    """Before anything is read from the daemon's directories: as root only over root's own directories,
    and numba's kernel cache checked before numba is first imported (`gatewayd run` calls this before
    it imports the daemon, whose rule engine imports numba)."""
    gateway = config.gateway
    refuse_root_over_foreign_directories((gateway.state_dir, gateway.cache_dir, gateway.runtime_dir,
                                          config.store.path.parent))
    use_kernel_cache(gateway.cache_dir)
