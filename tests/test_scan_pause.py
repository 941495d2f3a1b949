"""The scan loop waits for a poll's writes to pause (gatewayd.daemon.writes_pause), within a bound.

Real time on the event loop; the pause is widened here so that a loaded machine cannot stretch a writer's
gaps past it."""

from __future__ import annotations

import asyncio
import time

import pytest

from gatewayd import daemon


async def write_every(changed: asyncio.Event, gap: float, until: float) -> int:
    writes = 0
    while time.monotonic() < until:
        changed.set()
        writes += 1
        await asyncio.sleep(gap)
    return writes


async def pause_while_writing(write_for: float, bound: float) -> tuple[bool, bool]:
    """(whether the writer was done when the wait ended, whether `changed` was left clear)."""
    changed = asyncio.Event()
    changed.set()  # the write that woke the scan
    now = time.monotonic()
    writer = asyncio.create_task(write_every(changed, 0.01, now + write_for))
    await asyncio.wait_for(daemon.writes_pause(changed, now + bound), timeout=30)
    done = writer.done()
    writer.cancel()
    return done, not changed.is_set()


@pytest.fixture
def wide_pause(monkeypatch):
    monkeypatch.setattr(daemon, "WRITES_PAUSE", 0.3)


def test_the_scan_waits_until_a_polls_writes_have_stopped(wide_pause) -> None:
    writer_done, cleared = asyncio.run(pause_while_writing(write_for=0.6, bound=20.0))
    assert writer_done and cleared


def test_writes_that_go_on_hold_the_scan_no_longer_than_its_bound(wide_pause) -> None:
    writer_done, _ = asyncio.run(pause_while_writing(write_for=20.0, bound=1.0))
    assert not writer_done


def test_no_write_after_the_wake_waits_one_pause_only(wide_pause) -> None:
    changed = asyncio.Event()
    changed.set()
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(daemon.writes_pause(changed, started + 20.0), timeout=30))
    assert not changed.is_set()
    assert time.monotonic() - started < 10.0  # one pause (0.3 s), not the bound (20 s)
