"""Backfill after an outage, with real processes: samples per second drained from the store once the broker
is back, and how old the newest value at the receiver is meanwhile (live data interleaved with backfill).

1,000 tags changing every 200 ms; the broker is stopped until `--samples` rows wait in the store.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.common import emit, percentile
from core.batchformat import decode_body, parse_envelope
from gatewayd.platform.receiver import Receiver
from hil_tests.harness import Broker, Daemon, Simulator, plant_config, stop_all

GATEWAY_ID = "GW-BENCH-BACKFILL"


def rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute("SELECT coalesce(sum(rows), 0) FROM outbox").fetchone()[0]


def run(workdir: Path, tags: int, target: int, live_share: float) -> None:
    broker = Broker(workdir).start()
    plc = Simulator(workdir, tags, period=0.2).start()
    receiver = Receiver("127.0.0.1", broker.port, f"gatewayd/{GATEWAY_ID}/batch", insecure_plain=True,
                        client_id="bench-platform", session_expiry=3600)
    receiver.start()
    config = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=tags,
                          poll_interval=0.2, scan_interval=0.2, uplink={"live_share": live_share})
    daemon = Daemon(workdir, config).start()
    db = workdir / "state" / "gatewayd.db"
    try:
        time.sleep(5)
        broker.stop()
        while (waiting := rows(db)) < target:
            time.sleep(0.5)
        broker = Broker(workdir, broker.port).start()
        restarted, seen, newest, ages = time.time(), len(receiver.frames()), 0, []
        while True:
            frames = receiver.frames()
            for frame in frames[seen:]:
                stamps = decode_body(parse_envelope(frame))["samples"]["ts"]
                newest = max([newest, *stamps])
            seen = len(frames)
            if newest:
                ages.append(time.time() - newest / 1000)
            if rows(db) < tags * 5 or time.time() - restarted > 900:
                break
            time.sleep(0.1)
        seconds = time.time() - restarted
        steady = ages[len(ages) // 10:] or [float("nan")]
        emit("backfill", tags=tags, waiting_rows=waiting, live_share=live_share, drain_seconds=round(seconds, 1),
             drained_samples_per_s=round(waiting / seconds), live_age_p50_s=round(percentile(steady, 0.5), 3),
             live_age_max_s=round(max(steady), 3))
    finally:
        receiver.stop()
        stop_all(daemon, plc, broker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=1000)
    args = parser.parse_args(argv)
    for share in (0.2, 0.0):
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.tags, args.samples, share)


if __name__ == "__main__":
    main()
