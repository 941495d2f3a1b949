"""Store throughput: samples appended per second (one transaction per scan tick) and samples
acknowledged per second (batch build, encode, sign, acknowledge), for both durability settings, with the
local history kept (the default) and without (`history.keep: 0`); and the CPU seconds per million samples
acknowledged, which is what keeping history adds to the store's per-value cost."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import emit
from gatewayd.uplink.batch import encode_batch
from store import Keeping, SampleBlock, Store


def run(synchronous: str, total: int, per_tick: int, batch_rows: int, keep: float) -> None:
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db", synchronous, keeping=Keeping(keep=keep))
        ids = store.tag_ids([f"TAG{i}" for i in range(per_tick)])
        rng = np.random.default_rng(1)
        started = time.perf_counter()
        for _ in range(total // per_tick):
            now = time.time()
            store.append(SampleBlock(ids, np.full(per_tick, now), rng.normal(50, 5, per_tick),
                                     np.zeros(per_tick, dtype=np.uint8), np.full(per_tick, np.nan)), [])
        appended = time.perf_counter() - started

        def make(content, seq, prev_hash):
            return encode_batch(content, gateway_id="GW-BENCH", boot_id=bytes(16), seq=seq, prev_hash=prev_hash,
                                created_ms=int(time.time() * 1000), private_key=key)

        started = time.perf_counter()
        sent = 0
        ack_cpu = 0.0
        while (batch := store.build_batch(batch_rows, make)) is not None:
            cpu = time.process_time()
            sent += store.acknowledge(batch.seq)
            ack_cpu += time.process_time() - cpu
        drained = time.perf_counter() - started
        store.close()
    emit("store", synchronous=synchronous, history=keep > 0, samples=total, rows_per_tick=per_tick,
         batch_rows=batch_rows, append_samples_per_s=round(total / appended), ack_samples_per_s=round(sent / drained),
         ack_cpu_s_per_million=round(ack_cpu / sent * 1e6, 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=500_000)
    args = parser.parse_args(argv)
    for synchronous in ("full", "normal"):
        for keep in (0.0, Keeping().keep):
            run(synchronous, args.samples, per_tick=10_000, batch_rows=5000, keep=keep)


if __name__ == "__main__":
    main()
