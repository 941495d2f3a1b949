"""Seconds from a broker's return after an outage to the first live sample at the platform.

    python -m bench.bench_reconnect [--outage S]

The daemon as a process, polling the PLC simulator (200 tags, every 200 ms) and publishing to
mosquitto; mosquitto is stopped for `--outage` seconds (default 16, the outage of the figure that
issue 9 measured at 14.9 s) and restarted on the same port (`hil_tests.outage`). One JSON line:
`reconnect_to_live_seconds`, counted from the restart order to the first sample read after it held
by a subscriber.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.common import emit
from hil_tests.outage import reconnect_to_live


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reconnect", description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=16.0, help="seconds the broker stays down")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as workdir:
        seconds = reconnect_to_live(Path(workdir), outage=args.outage)
    emit("broker_return", outage_seconds=args.outage, reconnect_to_live_seconds=round(seconds, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
