"""The driver kit: what every driver shares, written once.

- `Driver`, the contract a driver kind implements (`from_config`, `run`, `stats`, `is_down`), and
  `DriverStats`, the figures the metrics endpoint and `gatewayd status` read;
- `DeviceHealth`, the one up/down state machine: the first failure of an outage logs a warning and
  sends one `device_down` event, repeats log at debug, the first success sends one `device_up`;
- `Problems`, the same log-rate policy for smaller troubles (a block, a tag): loud once, then quiet
  until it clears;
- `Backoff`, exponential delays with jitter, and `next_tick`, a fixed schedule that skips missed ticks;
- `BlockPoller`, the poll of one device's planned blocks, shared by every Modbus transport and the
  RTU bus master: each block's values carry the time its own answer arrived, a block answered with
  garbage is DECODE_ERROR at once, and a device that answers nothing usable is declared down.

Protocol-neutral: nothing here knows Modbus, OPC or a socket. Drivers work in their own positions
0..n-1; the sink they are given maps those to point-table rows.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np

from drivers.values import finite_quality
from core.types import Event, Priority, Quality, SampleSink

JITTER = 0.2  # each delay is shortened by up to this fraction, so gateways do not reconnect in step
UNDECODABLE = "undecodable answers"

Clock = Callable[[], float]


@dataclass
class DriverStats:
    """Counters of one device since start. Every driver keeps one; `gatewayd.metrics` reads it by field.

    `requests_per_poll` is None where a driver has no fixed set of requests (subscriptions), and the
    metrics endpoint leaves None out.
    """

    polls: int = 0  # polls (or reads) the device answered
    failures: int = 0  # failed polls and failed connection attempts
    reconnects: int = 0  # connections or sessions made after the first
    block_errors: int = 0  # blocks that failed while others of the poll were read
    decode_errors: int = 0  # answers that were not a valid answer to their request
    skipped_ticks: int = 0  # schedule ticks lost to overrunning polls
    last_poll_latency: float = math.nan  # seconds, of the last answered poll
    requests_per_poll: int | None = None
    collisions: int | None = None  # RTU replies lost to two senders in one window; None where undetectable

    def __add__(self, other: DriverStats) -> DriverStats:
        """Figures of two parts of one device (the slaves of a bus) as one."""
        return DriverStats(
            self.polls + other.polls, self.failures + other.failures, self.reconnects + other.reconnects,
            self.block_errors + other.block_errors, self.decode_errors + other.decode_errors,
            self.skipped_ticks + other.skipped_ticks,
            other.last_poll_latency if math.isnan(self.last_poll_latency) else self.last_poll_latency,
            _add_optional(self.requests_per_poll, other.requests_per_poll),
            _add_optional(self.collisions, other.collisions))


def _add_optional(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


class Driver(Protocol):
    """What `drivers.create` builds for a device and the daemon runs: one task per driver."""

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> Self:
        """Build from a validated DeviceConfig whose tag i the driver writes at position rows[i]."""
        ...

    async def run(self, sink: SampleSink) -> None:
        """Read until cancelled; never returns otherwise."""
        ...

    @property
    def stats(self) -> DriverStats: ...

    @property
    def is_down(self) -> bool: ...


class DeviceHealth:
    """Whether a device (or one unit of a bus) answers: the one up/down state machine.

    `down()` after each failure and `up()` after each success; only the transitions make events:
    `device_down` (HIGH) with `cause`, `quality` and the device's location fields, `device_up` (INFO)
    with `down_for` and the same location fields. The first failure of an outage is a warning in the
    log, its repeats are debug lines, the recovery an info line.

        health = DeviceHealth("tank-plc", {"host": "10.0.0.5", "port": 502}, log)
        health.down(sink, "no response within 1 s", Quality.COMM_FAILURE)   # event, warning
        health.down(sink, "no response within 1 s", Quality.COMM_FAILURE)   # debug only
        health.up(sink)                                                       # event, info
    """

    def __init__(self, name: str, where: dict[str, Any], log: logging.Logger, *, label: str | None = None,
                 clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.name, self.where, self.log = name, dict(where), log
        self.label = label or f"device {name}"
        self._clock, self._wall = clock, wall
        self.down_since: float | None = None

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def down(self, sink: SampleSink, cause: str, quality: Quality) -> None:
        if self.down_since is not None:
            self.log.debug("%s still down: %s", self.label, cause)
            return
        self.down_since = self._clock()
        self.log.warning("%s down: %s", self.label, cause)
        sink.event(Event(kind="device_down", ts=self._wall(), source=self.name, priority=Priority.HIGH,
                         message=f"{self.name} down: {cause}",
                         data={**self.where, "cause": cause, "quality": int(quality)}))

    def up(self, sink: SampleSink) -> None:
        if self.down_since is None:
            return
        down_for = self._clock() - self.down_since
        self.down_since = None
        self.log.info("%s back after %.1f s", self.label, down_for)
        sink.event(Event(kind="device_up", ts=self._wall(), source=self.name, priority=Priority.INFO,
                         message=f"{self.name} answering again after {down_for:.1f} s",
                         data={**self.where, "down_for": round(down_for, 3)}))


class Problems:
    """Log-rate policy for recurring troubles: a warning the first time, debug while it lasts, info when it clears."""

    def __init__(self, log: logging.Logger, label: str) -> None:
        self.log, self.label = log, label
        self._current: set[Hashable] = set()

    def note(self, key: Hashable, message: str) -> None:
        level = logging.DEBUG if key in self._current else logging.WARNING
        self._current.add(key)
        self.log.log(level, "%s: %s", self.label, message)

    def clear(self, key: Hashable, message: str) -> None:
        if key in self._current:
            self._current.discard(key)
            self.log.info("%s: %s", self.label, message)

    @property
    def any(self) -> bool:
        """Whether a trouble is noted and not cleared: with none, a caller need not name what is well."""
        return bool(self._current)


class Backoff:
    """Exponential retry delays: initial, doubled per failure up to maximum, minus random jitter."""

    def __init__(self, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self._rand = initial, maximum, rand
        self._nominal = initial

    def next(self) -> float:
        delay = self._nominal * (1.0 - JITTER * self._rand())
        self._nominal = min(self.maximum, self._nominal * 2.0)
        return delay

    def reset(self) -> None:
        self._nominal = self.initial


def next_tick(previous: float, interval: float, now: float) -> tuple[float, int]:
    """The first tick of the schedule after `now`, and how many ticks were skipped to get there."""
    due = previous + interval
    if due > now:
        return due, 0
    skipped = math.floor((now - previous) / interval)
    return previous + (skipped + 1) * interval, skipped


class NoAnswer(Exception):
    """The device did not answer at all: no connection, connection lost, nothing within the timeout."""


class BadAnswer(Exception):
    """The device answered a block, but not with its values; only that block's rows take `quality`."""

    def __init__(self, message: str, quality: Quality) -> None:
        super().__init__(message)
        self.quality = quality


class BlockRead(Protocol):
    """One planned request of a poll: the positions its values go to, and how to name it in a log."""

    @property
    def rows(self) -> np.ndarray: ...

    def describe(self) -> str: ...


class BlockPoller:
    """One poll of a device's blocks, one request at a time, and what the answers mean for the device.

    `fetch(read)` returns a block's decoded values and `read_at`, the monotonic time its answer
    arrived (as close to the wire as the transport can tell), or raises `BadAnswer` (that block
    only) or `NoAnswer` (the whole device). Then:

    - each good block is written as soon as its answer is in, with its own `read_at`: never the end
      of the poll, so a poll slowed by a timeout or a stall neither makes the blocks read before it
      look fresher than they are nor holds back values the gateway already has;
    - a bad block's rows take its quality (DECODE_ERROR for garbage, counted in `decode_errors`),
      stamped with the time the bad answer arrived;
    - no answer at all: every row COMM_FAILURE, the device down, the rest of the poll skipped;
    - answers but no usable block: the device down with the first block's reason, or with
      "undecodable answers" when every answer was garbage; rows keep their block's quality;
    - any good block: the device up.

    With `whole_polls` the writes of a poll are held back and made together when it is over (still
    each with its own `read_at`), for a consumer that interprets several blocks as one reading (a
    GDS panel's channel); a poll that ends without an answer then writes nothing.
    """

    def __init__(self, reads: Sequence[BlockRead], rows: np.ndarray, health: DeviceHealth, stats: DriverStats,
                 problems: Problems, clock: Clock = time.monotonic, whole_polls: bool = False) -> None:
        self.reads, self.rows = tuple(reads), rows
        self.health, self.stats, self.problems = health, stats, problems
        self.whole_polls = whole_polls
        self._clock = clock
        stats.requests_per_poll = len(self.reads)

    async def poll(self, sink: SampleSink, fetch: Callable[[Any], Awaitable[tuple[np.ndarray, float]]]) -> bool:
        """Read every block once; True when the device answered at least one of them with its values."""
        started = self._clock()
        good: list[Any] = []
        bad: list[tuple[Any, BadAnswer]] = []
        held: list[Callable[[], None]] = []
        deliver = held.append if self.whole_polls else _call
        for read in self.reads:
            try:
                values, read_at = await fetch(read)
            except BadAnswer as exc:
                bad.append((read, exc))
                self.stats.decode_errors += exc.quality == Quality.DECODE_ERROR
                deliver(functools.partial(sink.set_quality, read.rows, int(exc.quality), read_at=self._clock()))
                continue
            except NoAnswer as exc:
                self.stats.failures += 1
                sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
                self.health.down(sink, f"{read.describe()}: {exc}", Quality.COMM_FAILURE)
                return False
            good.append(read)
            deliver(functools.partial(sink.write, read.rows, values, finite_quality(values), read_at=read_at))
        for write in held:
            write()
        if not good:
            self.stats.failures += 1
            self.health.down(sink, *down_reason(bad))
            return False
        self._note(good, bad)
        self.health.up(sink)
        self.stats.polls += 1
        self.stats.last_poll_latency = self._clock() - started
        return True

    def _note(self, good: list[Any], bad: list[tuple[Any, BadAnswer]]) -> None:
        self.stats.block_errors += len(bad)
        for read, error in bad:
            self.problems.note(read.describe(), f"{read.describe()}: {error}")
        if self.problems.any:  # a healthy device's poll makes no message for each of its blocks
            for read in good:
                self.problems.clear(read.describe(), f"{read.describe()} readable again")


def _call(write: Callable[[], None]) -> None:
    write()


def down_reason(bad: Sequence[tuple[BlockRead, BadAnswer]]) -> tuple[str, Quality]:
    """Why a device whose every block failed is down: "undecodable answers" when all were garbage."""
    read, first = bad[0]
    if all(error.quality == Quality.DECODE_ERROR for _, error in bad):
        return f"{UNDECODABLE} ({read.describe()}: {first})", Quality.DECODE_ERROR
    return f"{read.describe()}: {first}", first.quality
