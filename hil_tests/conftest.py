"""Fixtures for the plant in a box: every process is stopped at the end of its test, whatever happened."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatewayd.keys import load_public_key
from gatewayd.platform.receiver import Receiver
from gatewayd.platform.verify import ChainVerifier, Report
from hil_tests.harness import Broker, Daemon, Process, Simulator, plant_config, stop_all
from hil_tests.ingest_plant import new_database
from hil_tests.postgres import Postgres
from hil_tests.sim.rtu_bus import SerialPair
from hil_tests.simprocess import SimProcess
from hil_tests.storerows import outbox_samples

GATEWAY_ID = "GW-TEST-001"
TOPIC = f"gatewayd/{GATEWAY_ID}/batch"


@dataclass
class Plant:
    """A broker, a PLC simulator, a receiver standing in for the platform, and the daemon."""

    workdir: Path
    broker: Broker
    plc: Simulator
    receiver: Receiver
    config: Path
    daemons: list[Daemon] = field(default_factory=list)

    def start_daemon(self) -> Daemon:
        daemon = Daemon(self.workdir, self.config).start()
        self.daemons.append(daemon)
        return daemon

    def restart_broker(self) -> None:
        self.broker = Broker(self.workdir, self.broker.port).start()

    def report(self) -> Report:
        verifier = ChainVerifier(load_public_key(self.workdir / "signing.key.pub"), gateway_id=GATEWAY_ID)
        for frame in self.receiver.frames():
            verifier.feed(frame)
        return verifier.report()

    def store_rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.workdir / "state" / "gatewayd.db") as conn:
            return conn.execute(sql).fetchall()

    def outbox_samples(self) -> list[tuple]:
        """The samples waiting in the outbox (hil_tests.storerows.outbox_samples)."""
        with contextlib.closing(sqlite3.connect(self.workdir / "state" / "gatewayd.db")) as conn:
            return outbox_samples(conn)

    def processes(self) -> list[Process]:
        return [*self.daemons, self.plc, self.broker]


def committed(daemon: Daemon) -> tuple[int, int]:
    """Samples and events the daemon says it committed, from its last log line at a clean stop."""
    found = re.findall(r"stopped: (\d+) samples and (\d+) events committed", daemon.log_text())
    assert found, f"daemon did not stop cleanly:\n{daemon.log_text()[-2000:]}"
    samples, events = found[-1]
    return int(samples), int(events)


def make_plant(workdir: Path, tags: int, **config) -> Plant:
    broker = Broker(workdir).start()
    plc = Simulator(workdir, tags).start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True,
                        capture_path=workdir / "capture.bin", client_id="hil-platform", session_expiry=3600)
    receiver.start()
    config_path = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port,
                               tags=tags, **config)
    return Plant(workdir, broker, plc, receiver, config_path)


@pytest.fixture
def plant_factory(tmp_path: Path):
    plants: list[Plant] = []

    def build(tags: int = 200, **config) -> Plant:
        plant = make_plant(tmp_path / f"plant{len(plants)}", tags, **config)
        plants.append(plant)
        return plant

    yield build
    for plant in plants:
        plant.receiver.stop()
        stop_all(*plant.processes())


@pytest.fixture
def sim_processes() -> Iterator[Callable[[SimProcess], SimProcess]]:
    """Starts simulator children for a test and kills each one at its end, whatever happened."""
    started: list[SimProcess] = []

    def start(process: SimProcess) -> SimProcess:
        started.append(process)  # before starting, so one that fails to announce its port is killed too
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.close()


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[Callable[..., SerialPair]]:
    """Starts socat's pseudo-terminal pair with the slave simulator on one end: serial_pair(units, baud=...);
    every pair is pulled at the end of the test."""
    pairs: list[SerialPair] = []

    def start(units: tuple[int, ...], **options) -> SerialPair:
        pairs.append(SerialPair(tmp_path, units, **options).start())
        return pairs[-1]

    try:
        yield start
    finally:
        for pair in pairs:
            pair.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throw-away PostgreSQL cluster for the session (hil_tests/postgres.py); a test that stops it
    starts it again. Each test takes a database of its own from `ingest_db`."""
    with Postgres() as cluster:
        yield cluster


@pytest.fixture
def ingest_db(postgres: Postgres) -> str:
    """A fresh database with the gatewayd-ingest schema; its libpq connection string."""
    return new_database(postgres)
