"""The cyclic garbage collector in a daemon whose objects mostly live as long as it does.

Once the daemon is READY, nearly everything alive (modules, the config, point table, rule engine,
drivers, publisher) stays for the whole run, and the hot path makes few objects that outlive a
tick. With Python's defaults the collector still ran a young collection every 700 container
allocations (a batch read from the store makes thousands at once) and every few seconds a full one
that traced the ~150,000 long-lived objects again: on bench_footprint's 10,000-register workload,
30 s on the development machine, 500 young and 3 full collections, the full ones 58 ms each, 0.23 s
in all (0.8 CPU-s per million values). After `settle` the same 30 s had none: the long-lived
objects are frozen out of the collector's sight (`gc.freeze`) and a young collection waits for
10,000 allocations more than deallocations, which the hot path does not reach. Garbage in
reference cycles is still collected, only later, and never more than those 10,000 containers
wait for it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # Python's default is 700


def settle() -> None:
    """At READY: freeze what is alive and let young collections wait for YOUNG_THRESHOLD allocations."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def resettle() -> None:
    """After a reload: the objects it replaced were frozen with the rest, and those that hold each other
    in cycles would never be freed. All frozen objects go back to the collector, one full collection
    frees the replaced ones, and what is left is frozen again (a pause of one full collection, tens of
    milliseconds at 10,000 tags, once per reload)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
