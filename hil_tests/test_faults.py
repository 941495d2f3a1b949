"""Fault injection with real processes: SIGKILL loops, long outages, a flapping broker, a disk budget, a full
filesystem, and secrets kept out of logs.

`make test` runs each scenario shortened; `make soak` runs the same code full size
(GATEWAYD_FAULT_SIZE=full). Each scenario prints its figures as one JSON line (`pytest -s` shows them);
docs/reliability.md quotes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from core.batchformat import decode_body, parse_envelope
from gatewayd.platform.receiver import Receiver
from gatewayd.platform.verify import CONTROL_KINDS
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant, committed
from store import History, Store
from bench.bench_history import compact_all
from hil_tests.harness import Broker, Simulator, plant_config, stop_all
from hil_tests.outage import reconnect_to_live
from hil_tests.storerows import outbox_samples, rows_committed

FULL = os.environ.get("GATEWAYD_FAULT_SIZE") == "full"
SIZE = {
    "kills": 100 if FULL else 10,
    "outage_samples": 1_000_000 if FULL else 60_000,
    "flap_seconds": 120 if FULL else 20,
    "budget_samples": 400_000 if FULL else 40_000,
}


def figures(scenario: str, **values) -> None:
    print(json.dumps({"fault": scenario, "size": "full" if FULL else "short", **values}), flush=True)


@pytest.fixture
def fault_plant(tmp_path: Path):
    """Like plant_factory, with a fast simulator: 1,000 tags read and reported every 200 ms (max_interval
    equal to the poll, so every tag is a sample every scan: 5,000 samples per second)."""
    plants: list[Plant] = []

    def build(tags: int = 1000, period: float = 0.2, **config) -> Plant:
        workdir = tmp_path / f"plant{len(plants)}"
        broker = Broker(workdir).start()
        plc = Simulator(workdir, tags, period=period).start()
        receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                            session_expiry=3600)
        receiver.start()
        config.setdefault("poll_interval", period)
        config.setdefault("scan_interval", period)
        config.setdefault("max_interval", period)
        path = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port,
                            tags=tags, **config)
        plant = Plant(workdir, broker, plc, receiver, path)
        plants.append(plant)
        return plant

    yield build
    for plant in plants:
        plant.receiver.stop()
        stop_all(*plant.processes())


def settle(plant: Plant, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until no new frame arrived for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(plant.receiver.frames())
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)


def outbox_rows(plant: Plant) -> int:
    with contextlib.closing(sqlite3.connect(plant.workdir / "state" / "gatewayd.db", timeout=10)) as conn:
        return conn.execute("SELECT coalesce(sum(rows), 0) FROM outbox").fetchone()[0]


def integrity(plant: Plant) -> str:
    with contextlib.closing(sqlite3.connect(plant.workdir / "state" / "gatewayd.db")) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


SAMPLE = 0  # row_key's kind of a sample; 1 is an event


def row_key(kind: int, tag: str | None, ts: float, quality: int | None, body: str | None) -> tuple:
    """What identifies an outbox row in the batch that carries it (docs/uplink.md: times in whole ms)."""
    if kind == SAMPLE:
        return ("sample", tag, round(ts * 1000.0), quality)
    event = json.loads(body)
    return ("event", event["kind"], event["source"], round(ts * 1000.0), event["message"])


def identity(row_id: int, tag: str | None, ts: float) -> tuple:
    """A committed sample or event told apart from every other: its outbox row (a block holds many samples),
    and a sample's tag and time (a tag has one sample per time in a block)."""
    return row_id, tag, round(ts * 1000.0)


def committed_rows(plant: Plant) -> tuple[int, dict[tuple, tuple]]:
    """Samples and events ever committed (the store's `outbox_committed`; no row of this test is evicted)
    and, by `identity`, the keys of those not yet acknowledged. Read while no daemon runs."""
    with contextlib.closing(sqlite3.connect(plant.workdir / "state" / "gatewayd.db", timeout=10)) as conn:
        waiting = {identity(row_id, name, ts): row_key(SAMPLE, name, ts, quality, None)
                   for row_id, _, name, ts, _, quality in outbox_samples(conn)}
        waiting.update({identity(row_id, None, ts): row_key(1, None, ts, None, body)
                        for row_id, ts, body in conn.execute("SELECT id, ts, body FROM outbox WHERE kind = 1")})
        return rows_committed(conn), waiting


def received_rows(plant: Plant) -> Counter:
    """Keys of every row the accepted batches carried, one copy per seq (the verifier drops repeats)."""
    received: Counter = Counter()
    for batch in plant.report().batches:
        tags, samples = batch.body["tags"], batch.body["samples"]
        received.update(("sample", tags[tag], ts, quality)
                        for tag, ts, quality in zip(samples["tag"], samples["ts"], samples["quality"]))
        received.update(("event", event["kind"], event["source"], event["ts"], event["message"])
                        for event in plant_events(batch.body))
    return received


def plant_events(body: dict) -> list[dict]:
    """A body's events that were store rows: not the protocol's chain_reset and key_rotation (docs/uplink.md)."""
    return [event for event in body["events"] if event["kind"] not in CONTROL_KINDS]


def events(plant: Plant) -> list[dict]:
    return [event for batch in plant.report().batches for event in plant_events(batch.body)]


def wait_rows(plant: Plant, rows: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (count := outbox_rows(plant)) < rows and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


@pytest.mark.solo
def test_crash_loop_loses_and_duplicates_nothing(fault_plant):
    """After each SIGKILL the store is read: how many rows were ever committed, and which still await
    their PUBACK (every other run has the broker down, so many do). Every committed row must reach the
    platform exactly once, those left unacknowledged at a kill included."""
    plant = fault_plant()
    rnd = random.Random(5)
    committed_at_kills, unacknowledged = [], {}
    for kill in range(SIZE["kills"]):
        daemon = plant.start_daemon()
        broker_down = kill % 2 == 1
        if broker_down:
            plant.broker.stop()
        time.sleep(rnd.uniform(2.0, 5.0))  # start-up, scanning, publishing: killed wherever it is
        daemon.kill()
        committed_so_far, waiting = committed_rows(plant)
        committed_at_kills.append(committed_so_far)
        unacknowledged.update(waiting)
        if broker_down:
            plant.restart_broker()
    last = plant.start_daemon()
    time.sleep(5)
    assert last.stop() == 0
    settle(plant)
    committed_in_all, _ = committed_rows(plant)
    received = received_rows(plant)
    report = plant.report()
    figures("crash_loop", kills=SIZE["kills"], batches=report.batches_accepted, committed=committed_in_all,
            received=sum(received.values()), unacknowledged_at_kills=len(unacknowledged),
            duplicates_delivered=report.duplicates, boots=len(report.boot_ids), left_in_store=outbox_rows(plant))
    assert report.ok, report.format()  # every seq from 1 on, chained, signed: nothing built was lost
    assert 2 <= len(report.boot_ids) <= SIZE["kills"] + 1  # a daemon killed while starting sends nothing
    assert unacknowledged, "no kill found rows awaiting their PUBACK: the test proves nothing"
    assert committed_at_kills == sorted(committed_at_kills) and committed_at_kills[-1] <= committed_in_all
    missing = Counter(unacknowledged.values()) - received
    assert not missing, f"{sum(missing.values())} rows committed but unacknowledged at a kill never arrived, " \
                        f"e.g. {next(iter(missing))}"
    # a row under two seqs would make received exceed committed, a lost one fall short of it
    assert sum(received.values()) == committed_in_all, \
        f"committed {committed_in_all} rows, received {sum(received.values())}: every one exactly once"
    assert outbox_rows(plant) == 0, "every committed row was acknowledged, so it arrived"
    assert integrity(plant) == "ok"


def history_keys(database: Path) -> Counter:
    """Every sample and event in local history (staged or compacted), with the keys `row_key` gives, read
    through the store's own History as the console reads it."""
    history = History.open(database)
    try:
        kept: Counter = Counter()
        end = time.time() + 86400
        for tag in history.tags():
            got = history.samples(tag, 0, end)
            kept.update(row_key(SAMPLE, tag, ts, quality, None)
                        for ts, quality in zip(got.ts.tolist(), got.quality.tolist()))
        kept.update(("event", event.kind, event.source, round(event.ts * 1000.0), event.message)
                    for event in history.events(0, end))
        return kept
    finally:
        history.close()


def staged_rows(plant: Plant) -> int:
    with contextlib.closing(sqlite3.connect(plant.workdir / "state" / "gatewayd.db", timeout=10)) as conn:
        return conn.execute("SELECT count(*) FROM history_staged").fetchone()[0]


def test_kills_between_commit_and_compaction_lose_and_double_nothing_in_history(fault_plant):
    """SIGKILLs at random moments while rows are committed and staged for history, batches acknowledged and
    a backlog waits (5,000 samples a second, the uplink held to 20 kB/s): afterwards local history holds
    every row ever committed exactly once, what arrived upstream and what still waits, before and after
    the rows the kills left staged are compacted."""
    plant = fault_plant(uplink={"max_bytes_per_second": 20_000, "batch_max_rows": 1000})
    rnd = random.Random(16)
    staged_at_kills, waiting_at_kills = [], []
    for _ in range(3):
        daemon = plant.start_daemon()
        committed_before, deadline = committed_rows(plant)[0] if staged_at_kills else 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if committed_rows(plant)[0] >= committed_before + 10_000:
                    break
            except sqlite3.OperationalError:
                pass  # no store yet
            time.sleep(0.2)
        time.sleep(rnd.uniform(0.0, 1.0))
        daemon.kill()
        staged_at_kills.append(staged_rows(plant))
        waiting_at_kills.append(len(committed_rows(plant)[1]))
    committed_in_all, waiting = committed_rows(plant)
    database = plant.workdir / "state" / "gatewayd.db"
    kept = history_keys(database)
    received = received_rows(plant)
    store = Store.open(database)
    try:
        compact_all(store)  # what the next daemon would do once the staged rows are due
    finally:
        store.close()
    figures("kills_between_commit_and_compaction", kills=3, committed=committed_in_all, in_history=sum(kept.values()),
            staged_at_kills=staged_at_kills, waiting_at_kills=waiting_at_kills, received=sum(received.values()))
    assert min(staged_at_kills) > 0 and min(waiting_at_kills) > 0, "a kill found nothing staged or waiting"
    assert sum(kept.values()) == committed_in_all, "every committed row is in history exactly once"
    # a batch that arrived but whose PUBACK the kill beat is both received and waiting: the union, not the sum
    assert kept == received | Counter(waiting.values()), "history is what arrived upstream and what still waits"
    assert history_keys(database) == kept, "compacting what the kills left staged loses and doubles nothing"
    assert integrity(plant) == "ok"


@pytest.mark.solo
def test_long_outage_backfills_in_order_while_live_data_stays_fresh(fault_plant):
    plant = fault_plant()
    started_ms = time.time() * 1000
    daemon = plant.start_daemon()
    time.sleep(4)
    plant.broker.stop()
    stored = wait_rows(plant, SIZE["outage_samples"], timeout=900)
    frames_before = len(plant.receiver.frames())
    plant.restart_broker()
    restarted = time.time()
    # ages count from the first batch the daemon built after the broker came back (the receiver's
    # session may first deliver batches from before the outage)
    ages, newest, seen, reconnected = [], 0, frames_before, False
    while time.time() - restarted < 600:
        frames = plant.receiver.frames()
        for frame in frames[seen:]:
            envelope = parse_envelope(frame)
            reconnected = reconnected or envelope.created_ms >= restarted * 1000
            body = decode_body(envelope)
            if body["samples"]["ts"]:
                newest = max(newest, max(body["samples"]["ts"]))
        seen = len(frames)
        if reconnected:
            ages.append(time.time() - newest / 1000)
        if outbox_rows(plant) < 20_000 and len(ages) > 20:
            break
        time.sleep(0.1)
    backfill_seconds = time.time() - restarted
    assert daemon.stop() == 0
    settle(plant)
    samples, event_count = committed(daemon)
    report = plant.report()
    steady = ages[len(ages) // 10:]  # after the broker's and receiver's reconnect
    figures("long_outage", stored_during_outage=stored, backfill_seconds=round(backfill_seconds, 1),
            live_age_max_s=round(max(steady), 3), live_age_median_s=round(sorted(steady)[len(steady) // 2], 3),
            committed=samples, received=report.samples, lost=samples - report.samples)
    assert report.ok, report.format()
    assert (report.samples, report.events) == (samples, event_count), "exactly once after dedup"
    assert max(steady) < 1.5, f"live data fell behind during the backfill: {max(steady):.2f} s"
    assert outbox_rows(plant) == 0, "the store shrank back"
    stored_ever, _ = committed_rows(plant)
    received = received_rows(plant)
    assert sum(received.values()) == stored_ever, "every row the store ever held arrived once"
    # and no sample repeats another: a re-report needs a newer read, which has a newer time
    keys = [(key[1], key[2]) for key, count in received.items() for _ in range(count) if key[0] == "sample"]
    assert len(set(keys)) == len(keys), "two samples of one tag with the same read time"
    # every sample carries a read time of this run (a tag never read: the daemon's start), never 0
    early = [key for key in keys if key[1] < started_ms]
    assert not early, f"{len(early)} samples stamped before the daemon started, e.g. {early[:3]}"


def test_live_data_flows_again_within_seconds_of_the_broker_coming_back(tmp_path):
    """An 8 s outage: with paho's old backoff (1 s doubling to 30 s) the next attempt came 7 s after the
    broker's return; the daemon now tries every 0.5 s while the port refuses (gatewayd.uplink.redial)."""
    seconds = reconnect_to_live(tmp_path, outage=8.0)
    figures("broker_return", outage_seconds=8.0, reconnect_to_live_seconds=round(seconds, 3))
    assert seconds < 5.0, f"live data resumed only {seconds:.1f} s after the broker came back"


def test_flapping_broker_loses_nothing_and_leaks_nothing(fault_plant):
    plant = fault_plant(tags=500)
    daemon = plant.start_daemon()
    time.sleep(5)
    pid = daemon.proc.pid

    def measure() -> tuple[int, float]:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
        return fds, rss

    rnd = random.Random(7)
    start_fds, start_rss = measure()
    flaps, until = 0, time.monotonic() + SIZE["flap_seconds"]
    while time.monotonic() < until:
        plant.broker.stop()
        time.sleep(rnd.uniform(1, 5))
        plant.restart_broker()
        flaps += 1
        time.sleep(rnd.uniform(1, 5))
    time.sleep(5)
    end_fds, end_rss = measure()
    assert daemon.stop() == 0
    settle(plant)
    samples, event_count = committed(daemon)
    report = plant.report()
    figures("broker_flapping", flaps=flaps, committed=samples, received=report.samples,
            lost=samples - report.samples, duplicates_delivered=report.duplicates,
            fds=[start_fds, end_fds], rss_mib=[round(start_rss, 1), round(end_rss, 1)])
    assert report.ok, report.format()
    assert (report.samples, report.events) == (samples, event_count)
    assert end_fds <= start_fds + 2, "file descriptors leak on reconnect"
    assert end_rss - start_rss < 30, "memory grows with reconnects"


def test_disk_budget_keeps_every_event_and_accounts_for_every_evicted_sample(fault_plant):
    # no history: the file's size below is the outbox's budget alone (history has a bound of its own)
    plant = fault_plant(store={"max_bytes": "2 MiB", "thinning": "1s"}, history={"keep": 0})
    daemon = plant.start_daemon()
    time.sleep(4)
    plant.broker.stop()
    deadline = time.monotonic() + 900
    gaps_written = 0
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(plant.workdir / "state" / "gatewayd.db", timeout=10)) as conn:
            evicted, gaps_written = conn.execute("SELECT evicted, gaps FROM retention").fetchone()
        if evicted >= SIZE["budget_samples"] // 2:
            break
        time.sleep(1)
    size = (plant.workdir / "state" / "gatewayd.db").stat().st_size
    frames_before = len(plant.receiver.frames())
    plant.restart_broker()
    # the store holds about its budget (some 20,000 rows): wait until the daemon has reconnected and
    # sent its backlog, down to what one scan tick adds
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (len(plant.receiver.frames()) < frames_before + 10
                                           or outbox_rows(plant) > 5_000):
        time.sleep(0.5)
    assert daemon.stop() == 0
    settle(plant)
    samples, event_count = committed(daemon)
    report = plant.report()
    gap_events = [e for e in events(plant) if e["kind"] == "gap"]
    evicted = sum(e["data"]["samples"] for e in gap_events)
    actions = Counter(e["data"]["action"] for e in gap_events)
    per_tag = sum(count for e in gap_events for count, _, _ in e["data"]["tags"].values())
    figures("disk_budget", budget_bytes=2 << 20, db_file_bytes=size, committed=samples, received=report.samples,
            evicted_with_gap_records=evicted, gap_records=len(gap_events), actions=dict(actions),
            lost=samples - report.samples - evicted)
    assert report.ok, report.format()
    assert gap_events and evicted == per_tag
    assert report.events == event_count + len(gap_events), "every event arrived, gap records on top"
    assert report.samples + evicted == samples, "every sample arrived or is in a gap record"
    assert actions["thinned"] > 0
    # pages in use are brought back under the budget after every commit, so the file holds at most the
    # budget plus one scan tick's rows (1,000 samples, about 50 kB); measured: 8 kB and 32 kB over it
    assert size <= (2 << 20) * 1.1, f"the file outgrew its budget of 2 MiB: {size} bytes"


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 64 MiB tmpfs mounted for the store (the tests run as root in CI and here), private to its owner:
    tmpfs defaults to mode 1777, over which the daemon, as root, rightly refuses to keep its store."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"cannot mount a tmpfs (needs root): {result.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_filesystem_keeps_the_daemon_scanning_and_storing_resumes(fault_plant, small_filesystem):
    """The broker stays up, so acknowledgements and history's compactions go on around the full disk
    (failing and retried while it is full)."""
    plant = fault_plant(tags=200, store={"path": str(small_filesystem / "gatewayd.db")})
    db = small_filesystem / "gatewayd.db"
    daemon = plant.start_daemon()
    time.sleep(4)
    filler = small_filesystem / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)  # fill the filesystem to the last block
    for chunk in (1 << 20, 4096):
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * chunk)
    os.close(fd)
    time.sleep(8)
    assert daemon.running, "a full disk must not kill the daemon"
    log = daemon.log_text()
    assert "store cannot write" in log
    filler.unlink()
    time.sleep(8)
    assert daemon.stop() == 0
    settle(plant)
    kinds = Counter(event["kind"] for event in events(plant))
    report = plant.report()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        committed_in_all = rows_committed(conn)
        left = conn.execute("SELECT coalesce(sum(rows), 0) FROM outbox").fetchone()[0]
        integrity_ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    kept = history_keys(db)
    figures("full_filesystem", store_full=kinds["store_full"], store_resumed=kinds["store_resumed"],
            samples_received=report.samples, gaps=kinds["gap"], in_history=sum(kept.values()),
            committed=committed_in_all, left_in_outbox=left)
    assert report.ok, report.format()
    assert kinds["store_full"] >= 1 and kinds["store_resumed"] >= 1
    assert "Traceback" not in daemon.log_text()
    assert integrity_ok == "ok"
    assert sum(kept.values()) == committed_in_all, "every row committed, around the full disk, is in history once"
    assert not received_rows(plant) - kept, "every row that arrived upstream is in history"


def test_broker_password_never_reaches_the_logs(fault_plant):
    secret = "s3cr3t-Pa55word-" + os.urandom(6).hex()
    plant = fault_plant(tags=50, period=1.0)
    password_file = plant.workdir / "broker.password"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o600)
    path = plant_config(plant.workdir, gateway_id=GATEWAY_ID, plc_port=plant.plc.port, broker_port=plant.broker.port,
                        tags=50, uplink={"username": "gateway", "password_file": str(password_file)})
    plant.config = path
    daemon = plant.start_daemon()
    time.sleep(5)
    plant.broker.stop()
    time.sleep(3)
    plant.restart_broker()
    time.sleep(5)
    assert daemon.stop() == 0
    settle(plant)
    assert plant.report().ok
    logs = [daemon.log_text(), plant.broker.log_text()]
    assert all(secret not in text for text in logs)
    key = (plant.workdir / "signing.key").read_bytes()
    assert all(key.strip().decode(errors="replace") not in text for text in logs)

