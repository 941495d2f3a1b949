"""Rules evaluated at the edge over the point table: numba kernels beside pure-Python references.

The kernels' source is in `rules.kernels`, compiled ahead of time into an extension module (the daemon
then never imports numba) or, without that build, by numba at run time (`rules.kernels.load`).
Kernels take and update preallocated numpy arrays only (no dicts, no objects), so a scan over
100,000 rows costs microseconds per thousand; each kernel has a reference implementation in plain
Python that the property tests compare it against.
"""
