"""A real gatewayd daemon through gatewayd-ingest: enrolled with its public key by the CLI, its batches taken
by an ingest worker into PostgreSQL; every sample and event it committed is stored there exactly once, and
the chain is whole. The protocol's own events (chain_reset, key_rotation) are stored too, but the daemon
does not count them among the events it committed."""

from __future__ import annotations

import time

from hil_tests.conftest import GATEWAY_ID, committed
from hil_tests.ingest_plant import IngestWorker, query, run_ingest, wait_until

RUN_SECONDS = 8
PLANT_EVENTS = "SELECT count(*) FROM events WHERE kind NOT IN ('chain_reset', 'key_rotation')"
WAIT = 60.0


def test_a_real_gateway_through_ingest(plant_factory, ingest_db: str):
    plant = plant_factory(tags=50)
    out = run_ingest(ingest_db, "enrol", GATEWAY_ID, str(plant.workdir / "signing.key.pub"))
    assert f"{GATEWAY_ID}: enrolled" in out
    worker = IngestWorker(plant.workdir, ingest_db, plant.broker.port, "ingest-daemon").start()
    try:
        daemon = plant.start_daemon()
        time.sleep(RUN_SECONDS)  # let it run: reads, scans and batches
        assert daemon.stop() == 0
        samples, events = committed(daemon)
        assert samples > 0 and events > 0
        wait_until(lambda: query(ingest_db, f"SELECT (SELECT samples FROM gateways), ({PLANT_EVENTS})") == [
            (samples, events)], WAIT, f"{samples} samples and {events} events stored", worker, daemon)
    finally:
        worker.stop()
    assert query(ingest_db, "SELECT count(*), count(DISTINCT (tag, ts_ms)) FROM samples") == [(samples, samples)]
    assert query(ingest_db, PLANT_EVENTS) == [(events,)]
    batches = query(ingest_db, "SELECT count(*), min(seq), max(seq) FROM batches")[0]
    assert batches[0] == batches[2] and batches[1] == 1, "seq 1 to the last, every one"
    assert query(ingest_db, "SELECT kind, detail FROM findings WHERE serious") == []
    # a fresh gateway's chain begins with a signed reset (protocol 1.1): followed and flagged
    assert query(ingest_db, "SELECT reset_reason FROM epochs") == [("new_install",)]
    assert query(ingest_db, "SELECT count(*) FROM findings WHERE kind = 'chain_reset'") == [(1,)]
    assert query(ingest_db, "SELECT count(*) FROM gaps") == [(0,)]
    chain = run_ingest(ingest_db, "chain", GATEWAY_ID)
    assert f'"head_seq": {batches[2]}' in chain
