"""Local history at plant size: days of a 1,000-tag plant generated into the store, then read back.

The samples are committed a block per minute of the plant into the outbox (staged for history by its
trigger, deleted again as acknowledged), each commit followed by `Store.keep_history`, the daemon's own
upkeep: compaction into the days' chunks when due, and the day drops of `history.keep` and
`history.max_bytes`.

Figures: bytes per sample in history (what check-config's estimate uses), samples committed and kept
per second and the CPU it took, reading one tag's day at 1 s (86,400 samples), its last hour, and its
trend in 1,000 spans, dropping a day (in all, and its longest step: the longest the store is held).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import emit
from store import History, Keeping, SampleBlock, Store
from store.compaction import compact
from store.history import DAY, day_of

FAST_TAG = "TAG00000"  # read at 1 s: 86,400 samples a day


def plant(store: Store, tags: int) -> list[int]:
    return store.tag_ids([f"TAG{i:05d}" for i in range(tags)]).tolist()


def fill_day(store: Store, day: int, tags: int, interval: float, fast_tag: bool = False, tick: float = 60.0) -> int:
    """Commit one UTC day of `tags` tags, each reporting every `interval` seconds (staggered), a block per
    `tick` seconds of it, each commit followed by history's upkeep as in `Store.append` (compaction when
    due, day drops), and delete the rows from the outbox as an acknowledgement would. Returns the samples
    committed. Tag ids 1..tags must be registered (`plant`).

    With `fast_tag`, tag 1 also reports every second. Every 997th sample is bad (quality 17, no value).
    """
    per_tick = int(tick / interval * tags)
    committed = 0
    for start in np.arange(day * DAY, (day + 1) * DAY, tick):
        i = np.arange(per_tick)
        value = np.where(i % 997 == 0, np.nan, (i * 7919 % 100003) / 1000.0)
        block = SampleBlock(i % tags + 1, start + i * (tick / per_tick), value, np.where(i % 997 == 0, 17, 0),
                            np.full(per_tick, np.nan))
        if fast_tag:
            second = np.arange(int(tick))
            block = SampleBlock.concat([block, SampleBlock(np.ones(len(second)), start + second + 0.5,
                                                           (start + second) % 600 / 10.0, np.zeros(len(second)),
                                                           np.full(len(second), np.nan))])
        commit(store, block)
        committed += len(block)
    return committed


def commit(store: Store, block: SampleBlock) -> None:
    """`Store.append` of a tick's samples (with history's upkeep), then the rows' deletion from the outbox,
    which their acknowledgement would do."""
    store.append(block, [])
    store._conn.execute("DELETE FROM outbox")


def compact_all(store: Store) -> None:
    """Compact every staged row now, as the daemon does once they are due; each call takes at least one row,
    so a compaction that left its rows staged fails here instead of looping."""
    for _ in range(store._conn.execute("SELECT count(*) FROM history_staged").fetchone()[0]):
        if not compact(store._conn, store.keeping, time.time(), force=True):
            return
    if store._conn.execute("SELECT count(*) FROM history_staged").fetchone()[0]:
        raise RuntimeError("rows are still staged after as many compactions as there were rows")


def timed(function, repeat: int = 5) -> float:
    """Best of `repeat` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def run(days: int, tags: int, interval: float, max_bytes: int) -> None:
    today = day_of(time.time())
    span = list(range(today - days + 1, today + 1))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db", keeping=Keeping(keep=(days + 1) * DAY, max_bytes=max_bytes))
        plant(store, tags)
        started, cpu = time.perf_counter(), time.process_time()
        committed = sum(fill_day(store, day, tags, interval, fast_tag=True) for day in span)
        filled, cpu = time.perf_counter() - started, time.process_time() - cpu
        compact_all(store)  # the last minutes too, so bytes per sample counts compacted samples only
        stats = store.stats()
        history = History.open(store.path)
        kept = history.days()
        samples = sum(day.samples for day in kept)
        middle = kept[len(kept) // 2].day * DAY
        read_day = timed(lambda: history.samples(FAST_TAG, middle, middle + DAY))
        read_hour = timed(lambda: history.samples(FAST_TAG, middle + 3600, middle + 7200))
        read_slow_day = timed(lambda: history.samples("TAG00500", middle, middle + DAY))
        trend_day = timed(lambda: history.trend(FAST_TAG, middle, middle + DAY, 1000))
        points = len(history.samples(FAST_TAG, middle, middle + DAY))
        oldest = kept[0]
        store.keeping = Keeping(keep=time.time() - (oldest.day + 1) * DAY, max_bytes=max_bytes)  # the oldest is due
        steps, longest, drop = 0, 0.0, 0.0
        while history.days()[0].day == oldest.day:
            started = time.perf_counter()
            store.drop_history()
            step = time.perf_counter() - started
            steps, longest, drop = steps + 1, max(longest, step), drop + step
        history.close()
        store.close()
    emit("history", days=days, tags=tags, interval_s=interval, max_bytes=max_bytes, samples_committed=committed,
         days_kept=len(kept), samples_kept=samples, history_bytes=stats.history_bytes,
         bytes_per_sample=round(stats.history_bytes / samples, 1), samples_kept_per_s=round(committed / filled),
         commit_and_keep_cpu_s_per_million=round(cpu / committed * 1e6, 2),
         read_day_1s_ms=round(read_day, 1), day_points=points, read_hour_1s_ms=round(read_hour, 1),
         read_day_of_slow_tag_ms=round(read_slow_day, 2), trend_day_1s_ms=round(trend_day, 1),
         drop_day_ms=round(drop * 1000, 1), drop_day_samples=oldest.samples, drop_day_steps=steps,
         drop_longest_step_ms=round(longest * 1000, 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=2, help="days filled (30 days at the default rate take 15 minutes)")
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between a tag's samples (exception "
                        "reporting of a steady plant: max_interval)")
    parser.add_argument("--max-bytes", type=int, default=4 << 30)
    args = parser.parse_args(argv)
    run(args.days, args.tags, args.interval, args.max_bytes)


if __name__ == "__main__":
    main()
