"""A point table, its sinks and a scanner over a config, on clocks the test drives, with the scan's
output collected: for tests of stamping, staleness and report modes without any I/O."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gatewayd.config import parse_config
from gatewayd.values.points import PointTable
from gatewayd.config.model import point_tags
from gatewayd.values.scan import Scanner, build_engine
from gatewayd.values.sink import DeviceSink
from store import Store

WALL_OFFSET = 1_700_000_000.0  # the wall clock reads monotonic time plus this, until a test steps it


class FakeClock:
    """Both clocks of the gateway, driven by the test: `advance` moves both, `step_wall` only the wall."""

    def __init__(self, mono: float = 100.0):
        self.mono, self.offset = mono, WALL_OFFSET

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.mono + self.offset

    def perf_counter(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        self.offset += seconds


class Outbox:
    """Collects what the scan appends: samples as (tag name, ts, value, quality) tuples, and events."""

    def __init__(self, names: dict[int, str]):
        self.names, self.samples, self.events = names, [], []

    def append(self, samples, events) -> None:
        if samples is not None:
            self.samples += [(self.names[int(tag)], float(ts), float(value), int(quality))
                             for tag, ts, value, quality in zip(samples.tag_id, samples.ts, samples.value,
                                                                samples.quality)]
        self.events += events

    def of(self, name: str) -> list[tuple[str, float, float, int]]:
        return [sample for sample in self.samples if sample[0] == name]


def plant(tmp_path: Path, source: str) -> SimpleNamespace:
    """The table, scanner and collected output of `source`; `sinks[device name]` as drivers get them."""
    cfg = parse_config(source, tmp_path / "config.yaml")
    table = PointTable(point_tags(cfg))
    store = Store.open(tmp_path / "g.db")
    names = [tag.name for tag in table.tags]
    tag_ids = store.tag_ids(names)
    scanner = Scanner(table, tag_ids, store, build_engine(cfg, table))
    outbox = Outbox({int(tag_id): name for tag_id, name in zip(tag_ids, names)})
    scanner.outbox = outbox
    sinks = {device.name: DeviceSink(table, table.rows_of([tag.name for tag in device.tags]))
             for device in cfg.devices}
    return SimpleNamespace(config=cfg, table=table, scanner=scanner, outbox=outbox, sinks=sinks,
                           sink=sinks[cfg.devices[0].name], row=table.rows.__getitem__)


def positions(*indexes: int) -> np.ndarray:
    return np.array(indexes, dtype=np.int64)
