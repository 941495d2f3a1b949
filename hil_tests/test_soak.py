"""Soak: the daemon at 10,000 tags for a long while; memory, file descriptors and threads stay flat, and
everything it committed arrives.

`make soak` (GATEWAYD_FAULT_SIZE=full, as in test_faults.py) runs 30 minutes after a 5-minute warm-up;
`make test` runs 2 minutes in all (45 s warm-up). Resident memory, open file descriptors and threads
are read from /proc every few seconds; the figures are printed as one JSON line (`pytest -s` shows them)
and docs/reliability.md quotes them. asyncio tasks are not counted: the daemon exports no figure for
them, and its tasks are a fixed set (one per device, scan, uplink, watchdog, summary, control server).
"""

from __future__ import annotations

import json
import os
import statistics
import time

from hil_tests.conftest import Plant, committed
from hil_tests.test_end_to_end import wait_quiet

FULL = os.environ.get("GATEWAYD_FAULT_SIZE") == "full"
TAGS = 10_000
WARMUP = 300.0 if FULL else 45.0
WINDOW = 1800.0 if FULL else 75.0
SAMPLE_EVERY = 10.0 if FULL else 5.0
MAX_RSS_GROWTH_MIB = 5.0


def measure(pid: int) -> tuple[float, int, int]:
    """Resident memory (MiB), open file descriptors and threads of a process."""
    with open(f"/proc/{pid}/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return (int(status["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")),
            int(status["Threads"]))


def test_ten_thousand_tags_for_a_long_while_leak_nothing(plant_factory):
    plant: Plant = plant_factory(tags=TAGS)
    daemon = plant.start_daemon()
    time.sleep(WARMUP)
    assert daemon.running, daemon.log_text()[-3000:]
    pid = daemon.proc.pid
    series: list[tuple[float, float, int, int]] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < WINDOW:
        series.append((elapsed, *measure(pid)))
        time.sleep(SAMPLE_EVERY)
    series.append((time.monotonic() - started, *measure(pid)))
    pending = plant.store_rows("SELECT coalesce(sum(rows), 0) FROM outbox")[0][0]
    assert daemon.stop() == 0
    wait_quiet(plant)
    samples, events = committed(daemon)
    report = plant.report()
    rss = [row[1] for row in series]
    # medians of the first and last three readings, so one garbage-collection pause is no trend
    growth = statistics.median(rss[-3:]) - statistics.median(rss[:3])
    fds, threads = [row[2] for row in series], [row[3] for row in series]
    print(json.dumps({"fault": "soak", "size": "full" if FULL else "short", "tags": TAGS, "warmup_s": WARMUP,
                      "window_s": round(series[-1][0]), "rss_mib": [round(rss[0], 1), round(rss[-1], 1)],
                      "rss_growth_mib": round(growth, 2), "rss_max_mib": round(max(rss), 1),
                      "fds": [min(fds), max(fds)], "threads": [min(threads), max(threads)],
                      "rows_pending_at_end": pending, "committed": samples, "received": report.samples}),
          flush=True)
    assert growth < MAX_RSS_GROWTH_MIB, f"resident memory grew {growth:.1f} MiB after warm-up: {rss}"
    assert max(fds) - min(fds) <= 2, f"file descriptors not flat: {fds}"
    assert max(threads) == min(threads), f"threads not flat: {threads}"
    assert report.ok, report.format()
    assert (report.samples, report.events) == (samples, events), "everything committed arrived, once"
    assert samples > TAGS, "the plant was really polled and reported"

