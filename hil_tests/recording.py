"""What a test of one driver running in-process needs, written once for every driver kind.

The device goes through the real config loader (so the test's YAML is checked like a user's), the
driver writes into a sink that records what it was handed, and the test waits on that record and
cancels the driver at the end, checking that the cancellation was let through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gatewayd.config.load import parse_config
from gatewayd.config.model import DeviceConfig
from core.types import Event, Quality

ROOT = Path(__file__).resolve().parents[1]


class RecordingSink:
    """A point table in miniature: last value, quality and source time per row, every event, write counts.

    `writes` counts the writes each row received; `batches` counts write calls, whatever their rows;
    `read_at` and `confirmed` hold the latest read and confirmation time of each row (monotonic).
    """

    def __init__(self, size: int) -> None:
        self.values = np.full(size, np.nan)
        self.quality = np.full(size, int(Quality.NO_VALUE), dtype=np.uint8)
        self.source_ts = np.full(size, np.nan)
        self.read_at = np.full(size, np.nan)  # monotonic time of each row's latest read
        self.confirmed = np.full(size, np.nan)  # monotonic time each row was last confirmed unchanged
        self.writes = np.zeros(size, dtype=np.int64)
        self.stale_after = np.full(size, np.nan)  # as widened by the driver, NaN where it never did
        self.batches = 0
        self.events: list[Event] = []

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None, read_at=None) -> None:
        self.values[rows] = values
        self.quality[rows] = quality
        self.source_ts[rows] = np.nan if source_ts is None else source_ts
        self.read_at[rows] = time.monotonic() if read_at is None else read_at
        self.writes[rows] += 1
        self.batches += 1

    def set_quality(self, rows, quality, read_at=None) -> None:
        self.quality[rows] = quality

    def confirm(self, rows, read_at=None) -> None:
        self.confirmed[rows] = time.monotonic() if read_at is None else read_at

    def widen_stale_after(self, rows, seconds) -> None:
        self.stale_after[rows] = seconds

    def event(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def sources(self, kind: str) -> list[str]:
        return [event.source for event in self.events if event.kind == kind]


def load_device(device: dict[str, Any], base: Path = ROOT) -> DeviceConfig:
    """One device through the real loader, in a minimal gateway config placed in `base`."""
    document = {"gateway": {"id": "gw-test"}, "devices": [device],
                "uplink": {"host": "127.0.0.1", "transport": "plain", "signing_key": "key.pem"}}
    return parse_config(yaml.safe_dump(document, allow_unicode=True), base / "hil-test.yaml").devices[0]


async def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition()` held; fails the test when it does not hold within `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def stop(task: asyncio.Task) -> None:
    """Cancel a driver and check that it let the cancellation through."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
