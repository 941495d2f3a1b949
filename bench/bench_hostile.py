"""How old are GOOD values from a device that answers garbage and stalls mid-poll?

    python -m bench.bench_hostile [--requests N]

Runs the scenario of `hil_tests/test_hostile_timing.py` (the real daemon and mosquitto, a hostile peer
whose registers are a known function of time beside the healthy simulated PLC) and prints one JSON line:
`hostile_good_older_than_interval_share` is the share of GOOD samples whose value the device had already
replaced more than one poll interval before the sample's timestamp; `max_replaced_before_stamp_s` the
largest such gap; the decode errors counted against the garbage answers sent; the healthy PLC's poll rate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import emit
from hil_tests import hostile_timing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="requests the hostile peer serves")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-hostile-") as workdir:
        outcome = hostile_timing.run(Path(workdir), requests=args.requests)
    emit("hostile", poll_interval=hostile_timing.POLL, **outcome.figures())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
