"""The platform in a box for gatewayd-ingest: a PostgreSQL cluster, a database per test, mosquitto and ingest
workers as real processes. Shared by the HIL tests and bench/bench_ingest.py; nothing here knows about pytest.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from hil_tests.harness import ROOT, Process, stop_all
from hil_tests.postgres import Postgres
from ingest.schema import migrate

_databases = itertools.count(1)


def new_database(pg: Postgres) -> str:
    """A fresh database in the cluster, with the ingest schema; returns its connection string."""
    name = f"ingest{next(_databases)}"
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    conninfo = pg.conninfo.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(conninfo) as conn:
        migrate(conn)
    return conninfo


def run_ingest(conninfo: str, *args: str) -> str:
    """Run `gatewayd-ingest --db CONNINFO ARGS` as an operator would; its output, or RuntimeError."""
    done = subprocess.run([sys.executable, "-m", "ingest", "--db", conninfo, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"gatewayd-ingest {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


class IngestWorker(Process):
    """`gatewayd-ingest run` with a fixed client id: restarted, it resumes its session and the broker
    redelivers what it had not acknowledged."""

    def __init__(self, workdir: Path, conninfo: str, broker_port: int, client_id: str,
                 extra: tuple[str, ...] = ()) -> None:
        self.client_id = client_id
        argv = [sys.executable, "-m", "ingest", "--db", conninfo, "run", "--broker", f"127.0.0.1:{broker_port}",
                "--client-id", client_id, "--insecure-plain", *extra]
        super().__init__("ingest", argv, workdir / f"ingest-{client_id}.log", cwd=ROOT)

    def subscriptions(self) -> int:
        """How many times the broker granted the shared subscription (counted in the log)."""
        return self.log_text().count("subscribed to")

    def wait_subscribed(self, more_than: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.subscriptions() > more_than, timeout, f"{self.client_id} subscribed", self)

    def start(self, timeout: float = 30.0) -> IngestWorker:
        """Start and wait until the broker granted the shared subscription."""
        before = self.subscriptions()
        super().start()
        self.wait_subscribed(before, timeout)
        return self


def wait_until(condition: Callable[[], object], timeout: float, what: str, *watched: Process) -> object:
    """Poll `condition` until it is true; fail with the watched processes' log tails otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} {p.log_path}:\n{p.log_text()[-3000:]}" for p in watched)
            raise AssertionError(f"not within {timeout} s: {what}\n{tails}")
        time.sleep(0.1)


def query(conninfo: str, sql: str, *params) -> list[tuple]:
    """Rows of one query; a database briefly away (restarting) reads as no rows, for wait_until."""
    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
    except psycopg.OperationalError:
        return []


class Platform:
    """A platform in a box for the demo: its own PostgreSQL cluster and database, the gateways enrolled, and
    one ingest worker taking their batches from the broker. `close` stops and removes all of it."""

    def __init__(self, workdir: Path, broker_port: int, enrolled: dict[str, Path]) -> None:
        self.postgres = Postgres().start()
        self.worker: IngestWorker | None = None
        try:
            self.conninfo = new_database(self.postgres)
            for gateway_id, public_key in enrolled.items():
                run_ingest(self.conninfo, "enrol", gateway_id, str(public_key))
            self.worker = IngestWorker(workdir, self.conninfo, broker_port, "demo-ingest").start()
        except BaseException:
            self.close()
            raise

    def stored(self) -> tuple[int, int]:
        """Samples and events in the database so far."""
        rows = query(self.conninfo, "SELECT coalesce(sum(samples), 0), coalesce(sum(events), 0) FROM gateways")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def close(self) -> None:
        try:
            stop_all(self.worker)
        finally:
            self.postgres.close()
