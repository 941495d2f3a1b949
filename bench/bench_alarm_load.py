"""Alarm load benchmark: one simulated day of a plant replayed through the rule engine; prints JSON lines.

    python -m bench.bench_alarm_load                 # 1,000 tags, 86,400 one-second scans (86.4 M values)
    python -m bench.bench_alarm_load --tags 200 --hours 2

The plant: every tag ranges 0..100 with H 80, HH 90 and L 20. Most tags run at an operating point
between 30 and 70 with 1 % noise and a slow drift; 10 % hover just below H and 5 % just above L (the
noise carries them across the limit again and again); 10 % of the transmitters drop out now and then
(20 s to 10 min, quality COMM_FAILURE) and 5 % flicker (1 to 3 s of bad quality, about once an hour);
and a few real excursions (one per 125 tags) ramp a tag over HH for 2 to 15 minutes. The day is
generated in chunks (vectorised, 1 hour at a time), so memory stays bounded.

Two alarm systems watch it:
- naive: every crossing of a setpoint raises an alarm (no deadband, no delay), a bad reading arrives
  as the transmitter's fail-low value (0, NAMUR NE 43 under-range) and so crosses L, and every change
  to bad quality raises a bad-PV alarm;
- configured: the engine (numba backend) with deadband 2 % of range on every limit, on-delays of 10 s
  (H, L) and 3 s (HH), off-delays of 5 s, unknown on bad quality (limits hold, no fail-low crossing),
  and one bad-PV alarm per tag (`TAG.BADPV`) after 10 s of bad quality, returning after 30 s good.
Each counts alarms raised (an annunciation: NORM or RTNUN to UNACK). An excursion is caught when its
tag's H or HH alarm is raised between its start and 30 s after its end; every one must be (the unit
test tests/test_bench_alarm_load.py asserts that at a small size; here it is reported).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bench.common import emit

HIGH, HIGHHIGH, LOW = 80.0, 90.0, 20.0
FAIL_LOW = 0.0  # what a dead 4-20 mA transmitter reads as, to a system that ignores quality
COMM_FAILURE = 17
CHUNK = 3600


@dataclass(frozen=True)
class Excursion:
    tag: int
    start: float
    end: float  # seconds from the start of the day
    peak: float


@dataclass
class Plant:
    """The day's plan: operating points, noise, dropouts, flickers and excursions of every tag."""

    op: np.ndarray
    noise: np.ndarray
    drift: np.ndarray
    phase: np.ndarray
    bad: list[tuple[int, int, int]]  # (tag, first second, last second) of bad quality
    excursions: list[Excursion]


def plan(tags: int, seconds: int, seed: int) -> Plant:
    rng = np.random.default_rng(seed)
    op = rng.uniform(30.0, 70.0, tags)
    kinds = rng.permutation(tags)
    hover_high, hover_low = kinds[: tags // 10], kinds[tags // 10: tags // 10 + tags // 20]
    op[hover_high] = HIGH - rng.uniform(0.3, 1.5, len(hover_high))
    op[hover_low] = LOW + rng.uniform(0.3, 1.5, len(hover_low))
    noise = np.full(tags, 1.0)
    drift = np.where(np.isin(np.arange(tags), np.concatenate([hover_high, hover_low])), 0.3, 5.0)
    bad = []
    days = seconds / 86400.0
    for tag in rng.choice(tags, max(1, tags // 10), replace=False):  # dropouts, about 2 a day
        for _ in range(rng.poisson(2.0 * days) or 1):
            start = int(rng.integers(0, seconds))
            bad.append((int(tag), start, min(seconds - 1, start + int(rng.uniform(20, 600)))))
    for tag in rng.choice(tags, max(1, tags // 20), replace=False):  # flickers, about one an hour
        for _ in range(rng.poisson(24.0 * days)):
            start = int(rng.integers(0, seconds))
            bad.append((int(tag), start, min(seconds - 1, start + int(rng.integers(0, 3)))))
    normal = np.setdiff1d(np.arange(tags), np.concatenate([hover_high, hover_low]))
    excursions = []
    busy = {tag for tag, _, _ in bad}
    candidates = [int(tag) for tag in rng.permutation(normal) if int(tag) not in busy]
    for tag in candidates[: max(1, tags // 125)]:
        start = float(rng.uniform(0.05, 0.8) * seconds)
        excursions.append(Excursion(tag, start, start + float(rng.uniform(120, 900)), float(rng.uniform(92, 98))))
    return Plant(op, noise, drift, rng.uniform(0, 2 * np.pi, tags), bad, excursions)


def chunks(plant: Plant, seconds: int, seed: int, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first second, values[chunk, tags], bad[chunk, tags]) for the whole day; values are the true process."""
    rng = np.random.default_rng(seed + 1)
    tags = len(plant.op)
    for first in range(0, seconds, chunk):
        t = np.arange(first, min(seconds, first + chunk), dtype=np.float64)[:, None]
        values = plant.op + plant.drift * np.sin(2 * np.pi * t / 21600.0 + plant.phase) \
            + rng.normal(0.0, 1.0, (len(t), tags)) * plant.noise
        for ex in plant.excursions:
            inside = (t[:, 0] >= ex.start) & (t[:, 0] <= ex.end)
            if inside.any():
                ramp = np.clip(np.minimum(t[inside, 0] - ex.start, ex.end - t[inside, 0]) / 60.0, 0.0, 1.0)
                values[inside, ex.tag] = plant.op[ex.tag] + ramp * (ex.peak - plant.op[ex.tag]) \
                    + rng.normal(0.0, 0.5, inside.sum())
        bad = np.zeros(values.shape, np.bool_)
        for tag, start, end in plant.bad:
            a, b = max(start, first), min(end, first + len(t) - 1)
            if a <= b:
                bad[a - first:b - first + 1, tag] = True
        yield first, np.clip(values, 0.0, 100.0), bad


def naive_alarms(plant: Plant, seconds: int, seed: int) -> dict[str, int]:
    """Crossings with no deadband, delay or quality: bad readings come as fail-low values."""
    tags = len(plant.op)
    previous = {"H": np.zeros(tags, np.bool_), "HH": np.zeros(tags, np.bool_), "L": np.zeros(tags, np.bool_),
                "BADPV": np.zeros(tags, np.bool_)}
    counts = dict.fromkeys(previous, 0)
    for _, values, bad in chunks(plant, seconds, seed):
        read = np.where(bad, FAIL_LOW, values)
        for name, state in (("H", read >= HIGH), ("HH", read >= HIGHHIGH), ("L", read <= LOW), ("BADPV", bad)):
            before = np.vstack([previous[name][None, :], state[:-1]])
            counts[name] += int((state & ~before).sum())
            previous[name] = state[-1]
    return counts


def configured_engine(tags: int):
    from rules.engine import RuleEngine
    from rules.model import AlarmBehaviour, BadPvConfig, LimitAlarm, RulesConfig, TagAlarmConfig

    high = AlarmBehaviour(priority="medium", on_delay=10.0, off_delay=5.0)
    highhigh = AlarmBehaviour(priority="high", on_delay=3.0, off_delay=5.0)
    low = AlarmBehaviour(priority="medium", on_delay=10.0, off_delay=5.0)
    tag_alarms = [TagAlarmConfig(f"T{n}", (LimitAlarm("HH", HIGHHIGH, 2.0, highhigh), LimitAlarm("H", HIGH, 2.0, high),
                                           LimitAlarm("L", LOW, 2.0, low))) for n in range(tags)]
    rules = RulesConfig(bad_pv=BadPvConfig(on_delay=10.0, off_delay=30.0))
    return RuleEngine.build(rules, {f"T{n}": n for n in range(tags)}, tags, tag_alarms, backend="numba",
                            now_monotonic=0.0, now_wall=0.0)


def configured_alarms(plant: Plant, seconds: int, seed: int) -> tuple[dict[str, int], dict[int, list[float]]]:
    """Alarms the engine raises (per limit kind) and, per tag, when its H or HH was raised."""
    tags = len(plant.op)
    engine = configured_engine(tags)
    counts = {"H": 0, "HH": 0, "L": 0, "BADPV": 0}
    raised_high: dict[int, list[float]] = {}
    quality = np.zeros(tags, np.uint8)
    for first, values, bad in chunks(plant, seconds, seed):
        readings = np.where(bad, np.nan, values)
        for k in range(len(values)):
            now = float(first + k)
            quality[:] = np.where(bad[k], COMM_FAILURE, 0)
            for event in engine.evaluate(readings[k], quality, now, now):
                data = event.data
                if event.kind != "alarm" or data["state"] != "UNACK" or data["previous"] == "ACKED":
                    continue
                kind = data["alarm"].rsplit(".", 1)[1]
                counts[kind] += 1
                if kind in ("H", "HH"):
                    raised_high.setdefault(int(data["tag"][1:]), []).append(now)
    return counts, raised_high


def caught(plant: Plant, raised_high: dict[int, list[float]]) -> list[tuple[Excursion, float | None]]:
    """Each excursion with the time its H or HH alarm was first raised during it (None: missed)."""
    result = []
    for ex in plant.excursions:
        times = [t for t in raised_high.get(ex.tag, []) if ex.start <= t <= ex.end + 30.0]
        result.append((ex, min(times) if times else None))
    return result


def run(tags: int, seconds: int, seed: int) -> dict:
    plant = plan(tags, seconds, seed)
    started = time.perf_counter()
    naive = naive_alarms(plant, seconds, seed)
    naive_s = time.perf_counter() - started
    started = time.perf_counter()
    configured, raised_high = configured_alarms(plant, seconds, seed)
    engine_s = time.perf_counter() - started
    return {"plant": plant, "naive": naive, "configured": configured, "caught": caught(plant, raised_high),
            "naive_s": naive_s, "engine_s": engine_s}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    seconds = int(args.hours * 3600)
    result = run(args.tags, seconds, args.seed)
    per_day = 86400.0 / seconds
    naive, configured = result["naive"], result["configured"]
    total_naive, total_configured = sum(naive.values()), sum(configured.values())
    emit("alarm_load", tags=args.tags, seconds=seconds, values=args.tags * seconds,
         naive_per_day=round(total_naive * per_day), configured_per_day=round(total_configured * per_day),
         reduction=round(1.0 - total_configured / total_naive, 3) if total_naive else None,
         naive_by_kind=naive, configured_by_kind=configured, anchor_reduction=0.79,
         naive_s=round(result["naive_s"], 1), engine_s=round(result["engine_s"], 1),
         engine_us_per_scan=round(result["engine_s"] / seconds * 1e6, 1))
    for ex, when in result["caught"]:
        emit("alarm_load_excursion", tag=f"T{ex.tag}", start=ex.start, end=ex.end, peak=round(ex.peak, 1),
             caught=when is not None, raised_after=None if when is None else round(when - ex.start, 1))
    missed = sum(when is None for _, when in result["caught"])
    emit("alarm_load_excursions", excursions=len(result["caught"]), caught=len(result["caught"]) - missed,
         missed=missed)


if __name__ == "__main__":
    main()
