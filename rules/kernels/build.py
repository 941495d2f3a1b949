"""Compile the rule kernels ahead of time into one extension module, so the daemon never loads numba.

    python -m rules.kernels.build [--output-dir DIR] [--if-stale]

`make venv` and `make install` run it after installing the package. numba's own ahead-of-time compiler
(`numba.pycc`) compiles each kernel of `rules.kernels.signatures.KERNELS` for exactly its argument types,
with the options its `@njit` gives it (numpy's error model for the expression interpreter, the GIL
released), into `native` beside this file: the module carries numba's small runtime and needs neither
numba nor llvmlite to load. Beside the kernels it exports `fingerprint()`, the SHA-256 of the sources it
was built from (`rules.kernels.signatures.fingerprint`); `rules.kernels.load` uses the module only
while that still matches. The machine code is for a generic CPU of the build machine's architecture,
so an installed tree can be copied to a slower box of the same kind.

The module is written into the package directory (or DIR), never into a cache: it is code, as trusted
as the rest of the installed package (docs/security.md). It appears in one rename, so a daemon starting
during a rebuild sees the old module or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

from rules.kernels.load import MODULE_NAME, PACKAGE_DIR, is_current, module_path
from rules.kernels.signatures import KERNELS, fingerprint


def _returning(value: str):
    def fingerprint():
        return value
    return fingerprint


def build(output_dir: Path = PACKAGE_DIR) -> Path:
    """Build the module into `output_dir`; returns its path."""
    stamp = fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is pending deprecation in numba; it is what this uses
        import numba.pycc.compiler as pycc_compiler
        from numba.pycc import CC
    compile_extra = pycc_compiler.compile_extra
    options = {}  # the kernel's Python function -> its @njit options
    cc = CC(MODULE_NAME, source_module=__name__)
    for name, kernel in KERNELS.items():
        dispatcher = getattr(importlib.import_module(f"rules.kernels.{kernel.module}"), name)
        options[dispatcher.py_func] = dispatcher.targetoptions
        cc.export(name, kernel.numba_signature)(dispatcher.py_func)
    cc.export("fingerprint", "unicode_type()")(_returning(stamp))

    def compile_as_jit(typing_context, target_context, function, args, return_type, flags, **kwargs):
        """pycc compiles every function with the same default flags; give each kernel its @njit's."""
        flags = flags.copy()
        jit = options.get(function, {})
        flags.error_model = jit.get("error_model", "python")
        flags.release_gil = bool(jit.get("nogil", False))
        return compile_extra(typing_context, target_context, function, args, return_type, flags, **kwargs)

    output_dir.mkdir(parents=True, exist_ok=True)
    target = module_path(output_dir)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".build-") as scratch:
        cc.output_dir = scratch
        with warnings.catch_warnings(), mock.patch.object(pycc_compiler, "compile_extra", compile_as_jit):
            warnings.simplefilter("ignore")
            cc.compile()
        built = Path(scratch) / cc.output_file
        os.chmod(built, 0o644)  # readable by the service, writable by its owner only, whatever the umask
        os.replace(built, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rules.kernels.build", description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=PACKAGE_DIR,
                        help="where to write the module (default: beside this file, %(default)s)")
    parser.add_argument("--if-stale", action="store_true",
                        help="do nothing when DIR already holds a build of these sources")
    args = parser.parse_args(argv)
    if args.if_stale and is_current(args.output_dir):
        return 0
    started = time.monotonic()
    path = build(args.output_dir)
    print(f"rule kernels compiled ahead of time into {path} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
