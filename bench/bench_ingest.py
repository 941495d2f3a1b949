"""gatewayd-ingest throughput: samples per second received from mosquitto, verified and stored in PostgreSQL
by 1 and by 2 worker processes, the CPU they and PostgreSQL spent per million samples, and PostgreSQL's own
COPY rate into the day-partitioned samples table (rows per second with no verification in front).

The batches (signed 1.1 envelopes of simulated gateways) are built before the clock starts; the clock runs
from the first publish until the last sample is in the database. One PostgreSQL cluster (fsync on, default
settings) and one mosquitto on this machine, as docs/platform.md's figures assume.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import cpu_seconds, emit
from hil_tests.harness import Broker, stop_all
from hil_tests.ingest_plant import IngestWorker, new_database, query
from hil_tests.postgres import Postgres
from hil_tests.sim.uplink_fleet import START_MS, Publisher, fleet
from ingest.admin import enrol
from ingest.rows import SAMPLE_COLUMNS
from ingest.schema import DAY_MS, ensure_partitions


def cluster_pids(pg: Postgres) -> list[int]:
    """The postmaster and its children (the backends doing the work)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == postmaster]
    return [postmaster, *children]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def cluster_cpu(pg: Postgres) -> float:
    total = 0.0
    for pid in cluster_pids(pg):
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # a backend that ended in between
    return total


def run_workers(pg: Postgres, workdir: Path, workers: int, gateways: int, batches: int, samples: int) -> None:
    conninfo = new_database(pg)
    fleet_ = fleet(gateways, tags=50, prefix=f"BENCH{workers}-{samples}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for gateway in fleet_:
            enrol(conn, gateway.gateway_id, gateway.public_key)
    payloads = [(g.topic, g.next_batch(samples)) for _ in range(batches) for g in fleet_]
    total = sum(g.samples_built for g in fleet_)
    run = workdir / f"run{workers}-{samples}"
    broker = Broker(run).start()
    started = [IngestWorker(run, conninfo, broker.port, f"bench{workers}-{i}") for i in range(workers)]
    publisher = None
    try:
        for worker in started:
            worker.start()
        publisher = Publisher(broker.port)
        cpu_before = [cpu_seconds(w.proc.pid) for w in started]
        pg_before = cluster_cpu(pg)
        clock = time.perf_counter()
        for topic, payload in payloads:
            publisher.publish(topic, payload)
        while query(conninfo, "SELECT count(*) FROM samples") != [(total,)]:
            if time.perf_counter() - clock > 600:
                raise TimeoutError("ingest did not store every sample within 600 s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - clock
        worker_cpu = sum(cpu_seconds(w.proc.pid) for w in started) - sum(cpu_before)
        pg_cpu = cluster_cpu(pg) - pg_before
    finally:
        if publisher:
            publisher.close()
        stop_all(*started, broker)
    emit("ingest", workers=workers, gateways=gateways, batches=len(payloads), samples_per_batch=samples,
         samples=total, seconds=round(elapsed, 2), samples_per_s=round(total / elapsed),
         batches_per_s=round(len(payloads) / elapsed),
         worker_cpu_s_per_million=round(worker_cpu / total * 1e6, 1),
         postgres_cpu_s_per_million=round(pg_cpu / total * 1e6, 1), cpus=os.cpu_count())


def run_copy(pg: Postgres, rows: int) -> None:
    """PostgreSQL alone: COPY `rows` sample rows into the partitioned table, one transaction per 10,000."""
    conninfo = new_database(pg)
    with psycopg.connect(conninfo) as conn:
        ensure_partitions(conn, [START_MS // DAY_MS])
        conn.commit()
        pg_before = cluster_cpu(pg)
        clock = time.perf_counter()
        for start in range(0, rows, 10_000):
            with conn.cursor() as cur, cur.copy(f"COPY samples ({SAMPLE_COLUMNS}) FROM STDIN") as copy:
                for i in range(start, min(rows, start + 10_000)):
                    copy.write_row(("GW-COPY", 1, i // 500, f"PT-{i % 50:03d}", START_MS + i, 20.5, 0, None))
            conn.commit()
        elapsed = time.perf_counter() - clock
        pg_cpu = cluster_cpu(pg) - pg_before
        size = conn.execute("SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                            "WHERE inhparent = 'samples'::regclass").fetchone()[0]
    emit("ingest_postgres_copy", rows=rows, seconds=round(elapsed, 2), rows_per_s=round(rows / elapsed),
         postgres_cpu_s_per_million=round(pg_cpu / rows * 1e6, 1), bytes_per_row=round(size / rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--batches", type=int, default=20, help="per gateway")
    parser.add_argument("--samples", type=int, default=500, help="per batch")
    parser.add_argument("--small-batches", type=int, default=100, help="per gateway, of 2 samples each: "
                        "the per-batch cost, what a fleet reporting little by exception sends")
    parser.add_argument("--copy-rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Postgres() as pg:
        for workers in (1, 2):
            run_workers(pg, Path(tmp), workers, args.gateways, args.batches, args.samples)
        for workers in (1, 2):
            run_workers(pg, Path(tmp), workers, args.gateways, args.small_batches, 2)
        run_copy(pg, args.copy_rows)


if __name__ == "__main__":
    main()
