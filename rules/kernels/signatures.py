"""The rule kernels' argument types, and the fingerprint of the sources an ahead-of-time build is made from.

One table serves both ways of running a kernel (`rules.kernels.load`): the ahead-of-time build compiles
each kernel for exactly these types (`rules.kernels.build`), and every call, built or just-in-time, is
checked against them first, so that an array of another dtype, rank or layout fails with a TypeError
naming the argument instead of being read as the wrong type (a compiled kernel checks no more than the
item size). Arrays are C-contiguous: the engine preallocates them, and slices of one-dimensional arrays
stay contiguous. No numba here: the daemon imports this module with the built kernels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

F8, U1, I8, I4, B1 = np.dtype(np.float64), np.dtype(np.uint8), np.dtype(np.int64), np.dtype(np.int32), \
    np.dtype(np.bool_)


@dataclass(frozen=True)
class Arg:
    """One argument: a scalar (`ndim` 0, a Python or numpy float) or a C-contiguous array."""

    name: str
    dtype: np.dtype
    ndim: int = 1

    @property
    def numba_type(self) -> str:
        if self.ndim == 0:
            return self.dtype.name
        return f"{self.dtype.name}[{', '.join([':'] * (self.ndim - 1) + ['::1'])}]"


@dataclass(frozen=True)
class Kernel:
    """A kernel: the module under `rules.kernels` that defines it, its arguments and its return type."""

    module: str
    args: tuple[Arg, ...]
    returns: str = "void"

    @property
    def numba_signature(self) -> str:
        return f"{self.returns}({', '.join(arg.numba_type for arg in self.args)})"


def _args(spec: str) -> tuple[Arg, ...]:
    """`"values:f8 now:f8/0 flags:u1/2"`: name, dtype code and rank (1 unless given)."""
    codes = {"f8": F8, "u1": U1, "i8": I8, "i4": I4, "b1": B1}
    args = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        code, _, ndim = kind.partition("/")
        args.append(Arg(name, codes[code], int(ndim or 1)))
    return tuple(args)


TABLE = "values:f8 quality:u1 "  # the point table's value and quality columns
KERNELS = {
    "limit_conditions": Kernel("conditions", _args(
        TABLE + "rows:i8 setpoint:f8 deadband:f8 high:b1 cond:u1 raw:u1")),
    "deviation_conditions": Kernel("conditions", _args(
        TABLE + "rows:i8 reference_rows:i8 setpoint:f8 mode:i8 limit:f8 deadband:f8 cond:u1 raw:u1")),
    "discrete_conditions": Kernel("conditions", _args(
        TABLE + "rows:i8 state_start:i8 states:f8 cond:u1 raw:u1")),
    "quality_conditions": Kernel("conditions", _args("quality:u1 rows:i8 mode:i8 cond:u1 raw:u1")),
    "rate_conditions": Kernel("conditions", _args(
        TABLE + "now:f8/0 rows:i8 scale:f8 window:f8 mode:i8 limit:f8 deadband:f8 sample_t:f8/2 sample_v:f8/2 "
        "head:i8 count:i8 cond:u1 raw:u1")),
    "update_alarms": Kernel("isa", _args(
        "raw:u1 expr_out:u1 now:f8/0 stale_after:f8/0 on_delay:f8 off_delay:f8 latching:u1 realarm:f8 "
        "supp_slot:i8 supp_expr:i8 supp:u1 active:u1 pending:f8 paused:f8 state:u1 latch:u1 since:f8 "
        "active_since:f8 stale:u1 shelved_until:f8 oneshot:u1 oos:u1 hidden:i8 out_index:i8 out_prev:u1 "
        "out_stale:i8 counts:i8")),
    "update_interlocks": Kernel("interlocks", _args(
        TABLE + "expr_out:u1 now_mono:f8/0 now_wall:f8/0 status_start:i8 status_rows:i8 status_invert:u1 "
        "trip_slot:i8 unit:i8 max_bypass:f8 unit_max:i8 protect_start:i8 protect_rows:i8 auth_from:f8 "
        "auth_until:f8 bypassed:u1 trip:u1 bypass_since:f8 bypass_wall:f8 bypassed_before:f8 flags:u1/2 "
        "unit_flag:u1 unit_count:i8 in_service:f8 in_service_quality:u1 out_interlock:i8 out_flag:i8 "
        "out_unit:i8"), returns="UniTuple(int64, 2)"),
    "run_programs": Kernel("program", _args(
        TABLE + "op:i4 arg:i4 constants:f8 start:i8 stack:f8/2 out:u1")),
    "select_reports": Kernel("report", _args(
        TABLE + "updated:f8 now:f8/0 deadband:f8 max_interval:f8 every_read:b1 last_value:f8 last_quality:u1 "
        "last_time:f8 last_update:f8 out_rows:i8"), returns="int64"),
}

# Everything a build's machine code follows: the kernels, the constants they take from the plain modules
# (frozen into the code), these signatures and the build's compiler options. tests/test_rules_aot.py checks
# that every project module a kernel module imports is listed.
SOURCES = ("rules/kernels/conditions.py", "rules/kernels/isa.py", "rules/kernels/interlocks.py",
           "rules/kernels/program.py", "rules/kernels/report.py", "rules/kernels/signatures.py",
           "rules/kernels/build.py", "rules/conditions.py", "rules/isa.py", "rules/interlocks.py",
           "rules/program.py", "rules/expr.py", "core/types.py")
ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `rules` and `core` packages


def fingerprint(root: Path = ROOT) -> str:
    """SHA-256 over the sources and numpy's version (the build is compiled against numpy's C API)."""
    digest = hashlib.sha256(f"numpy {np.__version__}\n".encode())
    for name in SOURCES:
        data = (root / name).read_bytes()
        digest.update(f"{name} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()
