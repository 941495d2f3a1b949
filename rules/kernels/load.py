"""Which rule kernels run: the ahead-of-time build when it is installed and current, else numba's JIT.

`kernels()` decides once per process, at the first engine built:
- the module `rules.kernels.native` (`python -m rules.kernels.build`, run by `make venv` and `make
  install`) is used when its `fingerprint()` equals the SHA-256 of the sources now installed
  (`rules.kernels.signatures.fingerprint`). Nothing of numba or llvmlite is imported then: the daemon
  saves their memory (about 100 MiB) and their import time, and has nothing to compile or load at start;
- a module built from other sources (edited since, another numpy) is never used: one warning says so,
  and the kernels come from numba as before, compiled just in time (and cached, `gatewayd.kernelcache`);
- with no module at all (a checkout without the build) the same, said at info level; and so with
  GATEWAYD_RULE_KERNELS=jit in the environment, whatever is built.
Either way every call is checked against the kernel's argument types first (`Checked`), so both run
exactly the same inputs and a wrong array fails loudly in both.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from rules.kernels.signatures import KERNELS, Kernel, fingerprint

log = logging.getLogger("rules.kernels")

MODULE_NAME = "native"  # as rules.kernels.build names it
PACKAGE_DIR = Path(__file__).resolve().parent


class Checked:
    """A kernel behind a check of its arguments' types (see rules.kernels.signatures)."""

    def __init__(self, name: str, kernel: Kernel, function: Callable):
        self.name, self.kernel, self.function = name, kernel, function
        self._arrays = [(k, arg) for k, arg in enumerate(kernel.args) if arg.ndim]
        self._scalars = [(k, arg) for k, arg in enumerate(kernel.args) if not arg.ndim]

    def __call__(self, *values):
        if len(values) != len(self.kernel.args):
            raise TypeError(f"{self.name}: {len(self.kernel.args)} arguments, not {len(values)}")
        for k, arg in self._arrays:
            value = values[k]
            if type(value) is not np.ndarray or value.dtype != arg.dtype or value.ndim != arg.ndim \
                    or not value.flags.c_contiguous:
                raise TypeError(f"{self.name}: {arg.name} must be a C-contiguous {arg.ndim}-d {arg.dtype} array, "
                                f"not {_describe(value)}")
        for k, arg in self._scalars:
            if not isinstance(values[k], numbers.Real):
                raise TypeError(f"{self.name}: {arg.name} must be a number, not {type(values[k]).__name__}")
        return self.function(*values)

    def __deepcopy__(self, memo):
        return self  # no state: a copied engine shares its kernels


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        layout = "C-contiguous" if value.flags.c_contiguous else "non-contiguous"
        return f"a {layout} {value.ndim}-d {value.dtype} array"
    return type(value).__name__


class Kernels:
    """The kernels by name (`limit_conditions`, ..., `select_reports`), and where they come from."""

    def __init__(self, origin: str, functions: dict[str, Callable]):
        self.origin = origin  # "ahead-of-time build <path>" or "numba just in time"
        for name, kernel in KERNELS.items():
            setattr(self, name, Checked(name, kernel, functions[name]))

    def __deepcopy__(self, memo):
        return self


def module_path(directory: Path = PACKAGE_DIR) -> Path:
    """Where the built module lives: `native` plus this interpreter's extension suffix."""
    return directory / (MODULE_NAME + importlib.machinery.EXTENSION_SUFFIXES[0])


def import_built(path: Path) -> ModuleType:
    """Load the extension at `path` without putting it in sys.modules (tests load several builds)."""
    spec = importlib.util.spec_from_file_location(f"rules.kernels.{MODULE_NAME}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_current(directory: Path = PACKAGE_DIR) -> bool:
    """Whether `directory` holds a build of the sources now installed."""
    path = module_path(directory)
    try:
        return path.exists() and import_built(path).fingerprint() == fingerprint()
    except (ImportError, AttributeError):
        return False


def load(directory: Path = PACKAGE_DIR) -> Kernels:
    """The built kernels in `directory` when current, else the just-in-time ones (logged why)."""
    path = module_path(directory)
    if not path.exists():
        log.info("rule kernels: no ahead-of-time build at %s (python -m rules.kernels.build); "
                 "numba compiles them just in time", path)
        return jit_kernels()
    expected = fingerprint()
    try:
        built = import_built(path)
        found = built.fingerprint()
    except (ImportError, AttributeError) as exc:
        log.warning("rule kernels: the ahead-of-time build %s does not load (%s); numba compiles them just "
                    "in time instead (rebuild: python -m rules.kernels.build)", path, exc)
        return jit_kernels()
    if found != expected:
        log.warning("rule kernels: the ahead-of-time build %s is stale (built from sources %.12s, these are "
                    "%.12s); numba compiles them just in time instead (rebuild: python -m rules.kernels.build)",
                    path, found, expected)
        return jit_kernels()
    log.info("rule kernels: the ahead-of-time build %s", path)
    return Kernels(f"ahead-of-time build {path}", {name: getattr(built, name) for name in KERNELS})


def jit_kernels() -> Kernels:
    """The `@njit` kernels: imports numba (and compiles, or loads from its cache, at the first call)."""
    return Kernels("numba just in time", {
        name: getattr(importlib.import_module(f"rules.kernels.{kernel.module}"), name)
        for name, kernel in KERNELS.items()})


@functools.cache
def kernels() -> Kernels:
    """The process's kernels, chosen at the first call (`load`); GATEWAYD_RULE_KERNELS=jit in the
    environment skips the build (numba's own path, as before the build existed; the tests of numba's
    kernel cache use it)."""
    if os.environ.get("GATEWAYD_RULE_KERNELS") == "jit":
        log.info("rule kernels: numba just in time (GATEWAYD_RULE_KERNELS=jit)")
        return jit_kernels()
    return load()
