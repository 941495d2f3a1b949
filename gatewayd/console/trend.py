"""Trends from the local history (store.history): one or several tags over a time range, cut down to what a
chart can draw, with the stretches of bad and uncertain quality as intervals of their own.

A day of one tag at 1 s is 86,400 samples; 30 days 2.6 million. The page draws at most about a
thousand points across, so `reduce` keeps, per bucket of the range, the lowest and the highest value (an
excursion survives any zoom level) and the worst quality; below `MAX_POINTS` samples nothing is merged.
Quality stretches come from the samples themselves: from a sample whose quality is bad (or uncertain)
up to the next sample that is not, so a device that was down for an hour shows an hour-wide band, not a
gap the eye fills in with a straight line.

Queries run on one thread of their own with one read-only `History` (SQLite connections belong to their
thread), so a month-long query never holds up the page streams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np

from core.types import QUALITY_BAD_MIN

MAX_POINTS = 1000  # buckets a reduced series has at most
MAX_TAGS = 8  # tags one chart may show
MAX_RANGE = 31 * 86400.0  # seconds a query may span


class TrendError(ValueError):
    """A trend request that cannot be answered; the message says why."""


def stretches(ts: np.ndarray, quality: np.ndarray, end: float) -> list[dict[str, Any]]:
    """[{from, to, kind}] where quality was bad (>= 16) or uncertain (1..15), each run up to the next sample
    of another kind (or `end`)."""
    kind = np.where(quality >= QUALITY_BAD_MIN, 2, np.where(quality > 0, 1, 0))
    if not kind.size:
        return []
    starts = np.flatnonzero(np.diff(kind, prepend=-1))  # index where each run of one kind begins
    stops = np.append(ts[starts[1:]], end)
    return [{"from": float(ts[start]), "to": float(stop), "kind": "bad" if kind[start] == 2 else "uncertain"}
            for start, stop in zip(starts.tolist(), stops.tolist()) if kind[start]]


def reduce(ts: np.ndarray, value: np.ndarray, quality: np.ndarray, start: float, end: float,
           buckets: int = MAX_POINTS) -> dict[str, list]:
    """The series as [ts], [low], [high] (equal when nothing was merged); NaN values (bad samples) as None."""
    if len(ts) <= buckets:
        values = _listed(value)
        return {"ts": ts.tolist(), "low": values, "high": values}
    index = np.minimum(((ts - start) / (end - start) * buckets).astype(np.int64), buckets - 1)
    firsts = np.flatnonzero(np.diff(index, prepend=-1))
    with np.errstate(all="ignore"):
        masked_low = np.where(np.isnan(value), np.inf, value)
        masked_high = np.where(np.isnan(value), -np.inf, value)
        low = np.minimum.reduceat(masked_low, firsts)
        high = np.maximum.reduceat(masked_high, firsts)
    low[np.isinf(low)] = np.nan
    high[np.isinf(high)] = np.nan
    return {"ts": ts[firsts].tolist(), "low": _listed(low), "high": _listed(high)}


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]


def parse_query(query: dict[str, list[str]], now: float) -> tuple[list[str], float, float]:
    """tag=A&tag=B&from=T0&to=T1 (Unix seconds; `to` defaults to now, `from` to ten minutes before it)."""
    tags = query.get("tag", [])
    if not tags or len(tags) > MAX_TAGS:
        raise TrendError(f"give 1 to {MAX_TAGS} tags (tag=NAME)")
    try:
        end = float(query.get("to", [now])[0])
        start = float(query.get("from", [end - 600.0])[0])
    except ValueError:
        raise TrendError("from and to are Unix times in seconds") from None
    if not start < end or end - start > MAX_RANGE or start != start or end != end:
        raise TrendError(f"from must be before to, at most {MAX_RANGE / 86400:.0f} days apart")
    return tags, start, end


class Trends:
    """Answers trend requests from the store's history, on a thread of its own."""

    def __init__(self, store_path: Path):
        self.store_path = store_path
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="console-history")
        self._history: Any = None

    async def query(self, tags: list[str], start: float, end: float) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._query, tags, start, end)

    def _query(self, tags: list[str], start: float, end: float) -> dict[str, Any]:
        if self._history is None:
            try:
                from store import History  # the read side only: the console never writes the store

                self._history = History.open(self.store_path)
            except Exception as exc:  # noqa: BLE001 - a missing or locked store is the page's message
                raise TrendError(f"the history in {self.store_path} cannot be read: {exc}") from None
        series = {}
        for tag in tags:
            try:
                found = self._history.samples(tag, start, end)
            except ValueError as exc:  # store.HistoryError: a tag the store has never seen
                raise TrendError(str(exc)) from None
            series[tag] = {**reduce(found.ts, found.value, found.quality, start, end),
                           "stretches": stretches(found.ts, found.quality, end), "samples": len(found.ts)}
        return {"from": start, "to": end, "series": series}

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
