"""The rule engine's compiled kernels, and how the daemon gets them without loading numba.

The `@njit` source of each kernel (conditions, isa, interlocks, program, report) sits here, beside its
plain-Python twin's module one level up (`rules.conditions` holds the constants, the reference and the
description; `rules.kernels.conditions` the kernels). `rules.kernels.build` compiles them ahead of time
into the extension module `native`; `rules.kernels.load` hands the engine that module's functions while
it matches the sources, else numba's just-in-time ones. Only the kernel modules and the build import
numba: this package, `signatures` and `load` do not.
"""
