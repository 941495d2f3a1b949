"""How old are GOOD values when the device answers garbage and stalls? The scenario, shared by the HIL
test (`test_hostile_timing.py`, which asserts) and `bench.bench_hostile` (which prints the figures).

The real daemon polls two devices: the healthy simulated PLC, and a hostile peer
(`hil_tests/sim/hostile.py --ramp --stall`) whose registers count up every RAMP_STEP seconds, so
the value v was replaced at epoch + (v + 1) * RAMP_STEP. The peer answers a share of requests with
garbage (wrong transaction id, unit, function, length or protocol id) and holds back some answers
for seconds, in the middle of a poll of several blocks. Every sample the platform received is then
judged: a GOOD sample carrying v at time ts shows a value the device had already replaced
`ts - replaced_at(v)` seconds before the sample's timestamp.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant
from hil_tests.harness import Broker, HostilePeer, Simulator, plant_config, stop_all
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet
from hil_tests.test_service import add_metrics, scrape, wait_for_scrape

POLL = 0.2  # both devices
TIMEOUT = 3.0  # longer than a stall: the held-back answer still comes, late, inside the poll
RAMP_STEP = 0.05  # every poll sees a new value
STALL = (45, 1.5)  # every 45th request waits 1.5 s
GARBAGE = ("wrong_tid", "wrong_unit", "wrong_function", "wrong_length", "bad_protocol_id")
MIX = ",".join(["valid=18", *(f"{kind}=0.4" for kind in GARBAGE)])  # 10 % garbage
HOSTILE_TAGS = 3  # one block each: a stall can fall between the blocks of a poll
HOSTILE = "hostile"
HEALTHY = "tank-plc"


@dataclass
class Outcome:
    """What the platform received and what the peer and the daemon counted."""

    samples: dict[str, list[tuple[int, float | None, int]]]  # tag -> (ts_ms, value, quality)
    events: list[dict]  # every event the platform received
    lags: list[float]  # per GOOD hostile sample: seconds the device had already replaced its value
    peer: dict  # the hostile peer's final stats
    metrics: dict[str, float]  # the daemon's metrics, scraped once the peer had stopped
    healthy_polls: float  # answered polls of the healthy PLC during the run
    seconds: float
    ended: float  # wall-clock time the run ended (the peer was stopped, then the daemon)
    log: str

    @property
    def garbage_answers(self) -> int:
        return sum(self.peer["kinds"].get(kind, 0) for kind in GARBAGE)

    def healthy_qualities(self) -> Counter[int]:
        """Samples of the healthy PLC by quality, after each tag's first and before the run ended (a
        stopping daemon's last scan finds its tags unread)."""
        return Counter(quality for tag, rows in self.samples.items() if not tag.startswith(f"{HOSTILE}.")
                       for ts, _, quality in rows[1:] if ts / 1000 < self.ended)

    def hostile_qualities(self) -> set[int]:
        """Qualities of the hostile peer's samples after each tag's first (which may predate its first poll)."""
        return {quality for tag, rows in self.samples.items() if tag.startswith(f"{HOSTILE}.")
                for _, _, quality in rows[1:]}

    def figures(self) -> dict:
        good = len(self.lags)
        older = sum(1 for lag in self.lags if lag > POLL)
        return {"good_samples": good,
                "hostile_good_older_than_interval_share": round(older / good, 4) if good else None,
                "max_replaced_before_stamp_s": round(max(self.lags), 3) if good else None,
                "garbage_answers": self.garbage_answers, "stalls": len(self.peer["stalls"]),
                "decode_errors": self.metrics.get(f'gatewayd_device_decode_errors_total{{device="{HOSTILE}"}}'),
                "healthy_poll_rate": round(self.healthy_polls * POLL / self.seconds, 3),
                "healthy_stale_samples": self.healthy_qualities()[Quality.STALE],
                "seconds": round(self.seconds, 1)}


def hostile_device(port: int) -> dict:
    tags = [{"name": f"{HOSTILE}.r{index}", "address": 100 * index, "type": "uint16"}
            for index in range(HOSTILE_TAGS)]
    return {"name": HOSTILE, "driver": "modbus_tcp", "host": "127.0.0.1", "port": port, "poll_interval": POLL,
            "timeout": TIMEOUT, "retries": 0, "max_gap": 0, "backoff_initial": 0.1, "backoff_max": 0.5, "tags": tags}


def run(workdir: Path, requests: int = 400, stalls: int = 3, deadline: float = 180.0) -> Outcome:
    """Run the plant until the peer served `requests` requests and stalled `stalls` times."""
    broker = Broker(workdir).start()
    plc = Simulator(workdir, 100, period=POLL).start()
    peer = HostilePeer(workdir, 5, MIX, options=["--ramp", str(RAMP_STEP), "--stall", f"{STALL[0]}:{STALL[1]}"])
    peer.start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    config = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=100,
                          poll_interval=POLL, scan_interval=POLL, extra_devices=[hostile_device(peer.port)])
    port = add_metrics(config)
    plant = Plant(workdir, broker, plc, receiver, config)
    try:
        daemon = plant.start_daemon()
        wait_for_scrape(port, daemon)
        polls = f'gatewayd_device_polls_total{{device="{HEALTHY}"}}'
        before, started = scrape(port)[polls], time.monotonic()
        give_up = started + deadline
        while peer.stats()["requests"] < requests or len(peer.stats()["stalls"]) < stalls:
            if not daemon.running or time.monotonic() > give_up:
                raise AssertionError(f"peer served {peer.stats()}; daemon running: {daemon.running}\n"
                                     f"{daemon.log_text()[-3000:]}")
            time.sleep(0.5)
        healthy_polls, seconds, ended = scrape(port)[polls] - before, time.monotonic() - started, time.time()
        peer.stop()  # its last stats are written at the stop; the daemon counts nothing after it
        time.sleep(1.0)
        metrics = scrape(port)
        if daemon.stop() != 0:
            raise AssertionError(f"the daemon did not stop cleanly:\n{daemon.log_text()[-3000:]}")
        wait_quiet(plant)
        final = peer.stats()
        samples = samples_by_tag(plant)
        events = [event for batch in plant.report().batches for event in batch.body["events"]]
        return Outcome(samples, events, lags(samples, final), final, metrics, healthy_polls, seconds, ended,
                       daemon.log_text())
    finally:
        receiver.stop()
        stop_all(*plant.processes(), peer)


def lags(samples: dict[str, list[tuple[int, float | None, int]]], peer: dict) -> list[float]:
    """For every GOOD hostile sample: how long before its timestamp the device had replaced its value."""
    epoch, step = peer["epoch"], peer["step"]
    return [ts / 1000 - (epoch + (value + 1) * step)
            for tag, rows in samples.items() if tag.startswith(f"{HOSTILE}.")
            for ts, value, quality in rows if quality == Quality.GOOD]
