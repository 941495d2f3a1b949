"""`make bench`: every benchmark in one run, each printing JSON lines, so figures sit side by side."""

from __future__ import annotations

import sys

from bench import (
    bench_alarm_load,
    bench_backfill,
    bench_daemon,
    bench_footprint,
    bench_history,
    bench_hostile,
    bench_ingest,
    bench_mqtt,
    bench_opcua,
    bench_opcua_latency,
    bench_reconnect,
    bench_rtu,
    bench_rules,
    bench_store,
)


def main() -> int:
    bench_store.main([])
    bench_history.main([])
    bench_daemon.main([])
    bench_footprint.main([])
    bench_backfill.main([])
    bench_reconnect.main([])
    bench_rules.main([])
    bench_alarm_load.main([])
    bench_opcua.main([])
    bench_opcua_latency.main([])
    bench_rtu.main([])
    bench_hostile.main([])
    bench_mqtt.main([])
    bench_ingest.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
