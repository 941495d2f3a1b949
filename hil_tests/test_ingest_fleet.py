"""gatewayd-ingest at work: two workers on a shared subscription take a fleet of simulated gateways' signed
batches (protocol 1.1, with key rotations, chain resets, daemon restarts and heartbeats) into PostgreSQL,
through a kill -9 of a worker mid-stream, a PostgreSQL restart and a mosquitto restart; at the end every
sample and event is in the database exactly once, every chain is whole and every reset and rotation is
followed and recorded."""

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

        # 1: kill -9 of a worker while batches stream in; it comes back under the same client id.
        # A quarter of the fleet rotates its key meanwhile.
        rotating = gateways[1::4]
        for gateway in rotating:
            gateway.rotate()
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

        # 3: the broker restarts with batches queued for the workers (its persistence keeps their sessions).
        # Another quarter lost its database: each begins a new epoch with a signed chain_reset.
        resetting = gateways[3::4]
        for gateway in resetting:
            gateway.reset("database_lost")
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        connects, subscribed = publisher.connects, [worker.subscriptions() for worker in workers]
        broker.stop()
        broker = Broker(tmp_path, broker.port).start()
        publisher.wait_connects(connects + 1)
        # mosquitto 2.0 does not restore shared subscriptions from its persistence (what was queued for the
        # workers' sessions it does): what it takes before they subscribe again goes nowhere. The gateways
        # would be acknowledged and let go of it, so docs/platform.md tells how to keep them off meanwhile.
        for worker, before in zip(workers, subscribed):
            worker.wait_subscribed(before)
        publish_round(publisher, gateways)
        publisher.wait_acknowledged()
        wait_until(all_stored, WAIT, "every batch stored after the broker restart", *workers, broker)
        for gateway in gateways:  # the broker acknowledged everything: nothing is lost if nothing is missing
            publisher.publish(gateway.heartbeat_topic, gateway.heartbeat(oldest_unacknowledged=None))
        publisher.wait_acknowledged()
        wait_until(lambda: query(ingest_db, "SELECT count(*) FROM epochs WHERE hb_head_seq IS NOT NULL") == [
            (GATEWAYS,)], WAIT, "every heartbeat taken", *workers)
    finally:
        if publisher:
            publisher.close()
        stop_all(*workers, broker)

    samples = sum(g.samples_built for g in gateways)
    assert query(ingest_db, "SELECT count(*), count(DISTINCT (gateway_id, tag, ts_ms)) FROM samples") == [
        (samples, samples)]
    batches = BATCHES_PER_ROUND * 6
    assert query(ingest_db, "SELECT gateway_id, batches FROM gateways ORDER BY 1") == [
        (g.gateway_id, batches) for g in gateways]
    # each gateway's current epoch runs from seq 1 to its last batch, the heartbeat's head
    assert query(ingest_db, "SELECT g.gateway_id, e.low_seq, e.head_seq, e.hb_head_seq FROM gateways g JOIN epochs e "
                            "ON e.gateway_id = g.gateway_id AND e.epoch = g.current_epoch ORDER BY 1") == [
        (g.gateway_id, 1, g.seq, g.seq) for g in gateways]
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]
    assert query(ingest_db, "SELECT count(*) FROM held") == [(0,)]
    assert query(ingest_db, "SELECT kind, detail FROM findings WHERE serious") == []
    counted = dict(query(ingest_db, "SELECT kind, count(*) FROM findings GROUP BY kind"))
    assert counted.get("new_boot") == len(gateways[::2])
    assert counted.get("key_rotation") == len(rotating)
    assert counted.get("chain_reset") == len(resetting)
    assert query(ingest_db, "SELECT count(*) FROM gateway_keys") == [(GATEWAYS + len(rotating),)]
    workers_used = query(ingest_db, "SELECT count(DISTINCT worker) FROM batches")
    assert workers_used == [(2,)], "the shared subscription split the batches between both workers"
    assert "no open gaps" in run_ingest(ingest_db, "gaps")
