"""gatewayd-ingest at work: two workers on a shared subscription take a fleet of simulated gateways' signed
batches into PostgreSQL, through a kill -9 of a worker mid-stream, a PostgreSQL restart and a mosquitto
restart; at the end every sample and event is in the database exactly once and every chain is whole."""

from __future__ import annotations

from pathlib import Path

from hil_tests.harness import Broker, stop_all
from hil_tests.ingest_plant import IngestWorker, query, run_ingest, wait_until
from hil_tests.postgres import Postgres
from hil_tests.sim.uplink_fleet import Publisher, SimGateway, fleet

GATEWAYS = 20
BATCHES_PER_ROUND = 3
SAMPLES_PER_BATCH = 100
WAIT = 60.0


def publish_round(publisher: Publisher, gateways: list[SimGateway], events: int = 1) -> None:
    """Each gateway sends BATCHES_PER_ROUND batches, interleaved as a fleet's would be."""
    for _ in range(BATCHES_PER_ROUND):
        for gateway in gateways:
            publisher.publish(gateway.topic, gateway.next_batch(SAMPLES_PER_BATCH, events))


def stored(conninfo: str) -> tuple[int, int]:
    rows = query(conninfo, "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM events)")
    return rows[0] if rows else (-1, -1)


def test_two_workers_store_every_sample_exactly_once_through_kills_and_restarts(
        tmp_path: Path, postgres: Postgres, ingest_db: str):
    gateways = fleet(GATEWAYS)
    for gateway in gateways:
        out = run_ingest(ingest_db, "enrol", gateway.gateway_id,
                         str(gateway.write_public_key(tmp_path / f"{gateway.gateway_id}.pub")))
        assert "enrolled" in out
    broker = Broker(tmp_path).start()
    workers = [IngestWorker(tmp_path, ingest_db, broker.port, f"ingest-{i}") for i in (1, 2)]
    publisher = None
    try:
        for worker in workers:
            worker.start()
        publisher = Publisher(broker.port)

        def all_stored() -> bool:
            return stored(ingest_db) == (sum(g.samples_built for g in gateways),
                                         sum(g.events_built for g in gateways))

        # 1: kill -9 of a worker while batches stream in; it comes back under the same client id
        publish_round(publisher, gateways)
        workers[0].kill()
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        workers[0].start()
        wait_until(all_stored, WAIT, "every batch stored after the kill", *workers)

        # 2: PostgreSQL restarts under the workers (half the fleet also restarts its daemon: a new boot id)
        for gateway in gateways[::2]:
            gateway.restart()
        publish_round(publisher, gateways)
        postgres.restart()
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        wait_until(all_stored, WAIT, "every batch stored after the PostgreSQL restart", *workers)

        # 3: the broker restarts with batches queued for the workers (its persistence keeps their sessions)
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        connects = publisher.connects
        broker.stop()
        broker = Broker(tmp_path, broker.port).start()
        publisher.wait_connects(connects + 1)
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        wait_until(all_stored, WAIT, "every batch stored after the broker restart", *workers, broker)
    finally:
        if publisher:
            publisher.close()
        stop_all(*workers, broker)

    samples = sum(g.samples_built for g in gateways)
    assert query(ingest_db, "SELECT count(*), count(DISTINCT (gateway_id, tag, ts_ms)) FROM samples") == [
        (samples, samples)]
    batches = BATCHES_PER_ROUND * 6
    assert query(ingest_db, "SELECT gateway_id, low_seq, head_seq, batches FROM gateways ORDER BY 1") == [
        (g.gateway_id, 1, batches, batches) for g in gateways]
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM findings WHERE serious") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM findings WHERE kind = 'new_boot'") == [(len(gateways[::2]),)]
    workers_used = query(ingest_db, "SELECT count(DISTINCT worker) FROM batches")
    assert workers_used == [(2,)], "the shared subscription split the batches between both workers"
    assert "no open gaps" in run_ingest(ingest_db, "gaps")
