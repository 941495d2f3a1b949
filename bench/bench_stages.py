"""The daemon's hot path stage by stage, in this process: process CPU seconds per million values each.

    python -m bench.bench_stages [--ticks 60] [--report exception every_read]

The workload of bench.bench_footprint (10,000 uint16 holding registers, every one changed since the
last poll), built from a real config with the daemon's own assembly, store on disk as shipped, a
signing key, and a local mosquitto for the publish. Each tick:

- `poll_decode`: the 80 answer frames of a poll parsed by the Modbus framing and decoded, as the
  driver does after the socket read (the socket I/O itself is left out);
- `point_write`: the decoded blocks written through the device sink into the point table;
- `scan`: `Scanner.tick` without its store append (staleness, data quality, rules, selection);
- `store_append`: the tick's samples committed (one transaction);
- `batch_read`: `Store.build_batch` less the envelope (select the rows, make the content, store the
  batch and advance the chain); the publisher's encoder makes the envelope, and its steps are timed
  apart on the same content: `batch_encode` the body as JSON, `compress` zlib, `sign` Ed25519;
- `publish`: paho's publish of the envelope at QoS 1 until its PUBACK is in (paho's thread included),
  `acknowledge` the rows deleted;
- `history`: history's upkeep after each append (`Store.keep_history`: compaction of the staged blocks
  into per-tag chunks when due, day drops), per value compacted: compactions take whole pieces of
  PIECE_BYTES (11 MiB, about 550,000 samples: the 60 ticks of a run take one), so a run ends with
  values still staged, whose compaction is the next run's (with too few ticks for a compaction, per
  value as the other stages).

Nothing here changes the shipped code: the stages are the same calls the daemon makes, timed apart.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import emit
from core.batchformat import ZLIB_LEVEL
from gatewayd.uplink.batch import body_text

STAGES = ("poll_decode", "point_write", "scan", "store_append", "batch_read", "batch_encode", "compress",
          "sign", "publish", "acknowledge", "history")
ENCODE_STAGES = ("batch_encode", "compress", "sign", "untimed_envelope")


class Timer:
    """Process CPU time per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def run(self, stage: str, function, *args, **kwargs):
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[stage] += time.process_time() - started


def answer_frames(driver, counter: int) -> list[tuple[object, bytes]]:
    """Each planned read with the MBAP answer a counters unit would give at step `counter`."""
    frames = []
    for read in driver.poller.reads:
        block = read.block
        words = (np.arange(block.start, block.start + block.count) + counter).astype(">u2").tobytes()
        pdu = bytes([3, len(words)]) + words
        frames.append((read, struct.pack(">HHHB", 1, 0, len(pdu) + 1, 1) + pdu))
    return frames


def run(report: str, ticks: int) -> None:
    import paho.mqtt.client as mqtt

    from bench.bench_footprint import REGISTERS, counters_config
    from gatewayd.assembly import build_driver, build_points, device_sink, open_store, publisher_factory
    from gatewayd.config import load_config
    from hil_tests.harness import Broker, stop_all

    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-stages-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir).start()
        client = None
        try:
            config = load_config(counters_config(workdir, 1, broker.port, report))
            store = open_store(config)
            points = build_points(config, store)
            table, scanner = points.table, points.scanner
            device = config.devices[0]
            driver = build_driver(device)
            sink = device_sink(device, table)
            publisher = publisher_factory(config, bytes(16))(store)  # its key, gateway id and encoder
            timer = Timer()
            outbox = scanner.outbox = _TimedOutbox(store, timer)
            keep_history = store.keep_history
            store.keep_history = lambda: timer.run("history", keep_history)
            acked = threading.Event()
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.on_publish = lambda *_: acked.set()
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            framing = driver._framing
            values = 0
            for tick in range(ticks + 1):
                if tick == 1:  # tick 0 reports every row's first value and warms the kernels: not counted
                    timer.seconds.clear()
                    kept_before = kept_samples(store)
                frames = answer_frames(driver, tick)
                for read, frame in frames:
                    framing._asked = (read.block.table, read.block.count)
                    decoded = timer.run("poll_decode", decode, framing, read, frame)
                    timer.run("point_write", sink.write, read.rows, decoded, 0, read_at=time.monotonic())
                started, nested = time.process_time(), outbox.nested
                scanner.tick()
                timer.seconds["scan"] += time.process_time() - started - (outbox.nested - nested)
                while True:
                    encoding = sum(timer.seconds[stage] for stage in ENCODE_STAGES)
                    started = time.process_time()
                    batch = store.build_batch(config.uplink.batch_max_rows,
                                              lambda content, seq, prev: encode(timer, publisher, content, seq, prev))
                    encoding = sum(timer.seconds[stage] for stage in ENCODE_STAGES) - encoding
                    timer.seconds["batch_read"] += time.process_time() - started - encoding
                    if batch is None:
                        break
                    acked.clear()
                    started = time.process_time()
                    client.publish(publisher.topic, batch.envelope, qos=1)
                    if not acked.wait(10):
                        raise RuntimeError("no PUBACK from mosquitto within 10 s")
                    timer.seconds["publish"] += time.process_time() - started
                    timer.run("acknowledge", store.acknowledge, batch.seq)
                values += REGISTERS if tick else 0
            compacted = kept_samples(store) - kept_before
            if compacted:
                timer.seconds["history"] *= values / compacted
            total = sum(timer.seconds[stage] for stage in STAGES)
            emit("footprint_stages", report=report, ticks=ticks, values=values,
                 cpu_s_per_million_values={stage: round(timer.seconds[stage] / values * 1e6, 3) for stage in STAGES},
                 total_cpu_s_per_million_values=round(total / values * 1e6, 2))
            store.close()
        finally:
            if client is not None:
                client.loop_stop()
                client.disconnect()
            stop_all(broker)


def kept_samples(store) -> int:
    """Samples compacted into history's days so far."""
    return store._conn.execute("SELECT coalesce(sum(samples), 0) FROM history_days").fetchone()[0]


def decode(framing, read, frame: bytes):
    """What the driver does with an answer frame: the framing's checks and unpacking, then the block decoder."""
    return read.decode(framing.parse(frame))


def encode(timer: Timer, publisher, content, seq: int, prev_hash: bytes) -> bytes:
    """The publisher's own encoder makes the envelope; its three steps are timed apart on the same content
    (the body written as JSON, zlib, Ed25519 over as many bytes), outside the `batch_read` stage."""
    started = time.process_time()
    envelope = publisher._encode(content, seq, prev_hash)
    timer.seconds["untimed_envelope"] += time.process_time() - started
    body = timer.run("batch_encode", body_text, content)
    packed = timer.run("compress", zlib.compress, body, ZLIB_LEVEL)
    timer.run("sign", publisher.keys.signer.sign, envelope[:-64])
    if len(packed) > len(envelope):
        raise RuntimeError("the envelope is smaller than its compressed body: the split no longer matches")
    return envelope


class _TimedOutbox:
    """The scanner's outbox: the store, its append timed as its own stage (and taken out of `scan`)."""

    def __init__(self, store, timer: Timer) -> None:
        self.store, self.timer = store, timer
        self.nested = 0.0

    def append(self, samples, events) -> None:
        started, history = time.process_time(), self.timer.seconds["history"]
        self.store.append(samples, events)
        spent = time.process_time() - started
        self.timer.seconds["store_append"] += spent - (self.timer.seconds["history"] - history)
        self.nested += spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--report", nargs="+", default=["exception", "every_read"])
    args = parser.parse_args(argv)
    for report in args.report:
        run(report, args.ticks)


if __name__ == "__main__":
    main()
