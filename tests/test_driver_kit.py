"""The driver kit on its own, with an explicit clock: the up/down state machine, its log-rate policy,
backoff, the schedule and the block poll every Modbus transport shares."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging

import numpy as np
import pytest

import drivers
from drivers.kit import (
    UNDECODABLE, Backoff, BadAnswer, BlockPoller, DeviceHealth, DriverStats, NoAnswer, Problems, next_tick,
)
from core.types import Event, Priority, Quality
from tests.uplinkschemas import event_problems

log = logging.getLogger("test.kit")


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    """Records writes, quality marks and events, in positions."""

    def __init__(self, size: int) -> None:
        self.value = np.full(size, np.nan)
        self.quality = np.full(size, int(Quality.NO_VALUE))
        self.read_at = np.full(size, np.nan)
        self.writes: list[np.ndarray] = []
        self.events: list[Event] = []

    def write(self, rows, values, quality=Quality.GOOD, source_ts=None, read_at=None) -> None:
        self.value[rows], self.quality[rows], self.read_at[rows] = values, quality, read_at
        self.writes.append(np.asarray(rows))

    def set_quality(self, rows, quality, read_at=None) -> None:
        self.quality[rows] = quality
        self.read_at[rows] = np.nan if read_at is None else read_at

    def event(self, event: Event) -> None:
        self.events.append(event)


def health(clock: Clock) -> DeviceHealth:
    return DeviceHealth("plc1", {"host": "10.0.0.5", "port": 502}, log, clock=clock, wall=lambda: 1.7e9 + clock())


def test_one_event_per_transition_with_location_cause_and_duration(caplog):
    clock, sink = Clock(), Sink(0)
    state = health(clock)
    state.up(sink)
    assert sink.events == [] and not state.is_down, "up while up is nothing"
    with caplog.at_level(logging.DEBUG, "test.kit"):
        state.down(sink, "no response within 1 s", Quality.COMM_FAILURE)
        clock.now += 2.5
        state.down(sink, "cannot connect", Quality.COMM_FAILURE)
        clock.now += 4.0
        state.up(sink)
        state.up(sink)
    down, up = sink.events
    assert (down.kind, down.source, down.priority, down.ts) == ("device_down", "plc1", Priority.HIGH, 1.7e9 + 100.0)
    assert down.data == {"host": "10.0.0.5", "port": 502, "cause": "no response within 1 s",
                         "quality": int(Quality.COMM_FAILURE)}
    assert down.message == "plc1 down: no response within 1 s"
    assert (up.kind, up.priority, up.data) == ("device_up", Priority.INFO,
                                               {"host": "10.0.0.5", "port": 502, "down_for": 6.5})
    assert up.message == "plc1 answering again after 6.5 s"
    assert event_problems(sink.events) == []
    # first failure loud, its repeat demoted, the recovery told
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "device plc1 down: no response within 1 s"),
        (logging.DEBUG, "device plc1 still down: cannot connect"),
        (logging.INFO, "device plc1 back after 6.5 s"),
    ]
    assert not state.is_down


def test_a_new_outage_after_recovery_is_loud_again(caplog):
    clock, sink = Clock(), Sink(0)
    state = health(clock)
    with caplog.at_level(logging.WARNING, "test.kit"):
        for _ in range(2):
            state.down(sink, "gone", Quality.COMM_FAILURE)
            state.up(sink)
    assert [event.kind for event in sink.events] == ["device_down", "device_up"] * 2
    assert len(caplog.records) == 2


def test_problems_warn_once_until_cleared(caplog):
    problems = Problems(log, "device plc1")
    with caplog.at_level(logging.DEBUG, "test.kit"):
        problems.note("holding 0..9", "exception 0x02")
        problems.note("holding 0..9", "exception 0x02")
        problems.clear("coil 0..3", "never failed")
        problems.clear("holding 0..9", "holding 0..9 readable again")
        problems.note("holding 0..9", "exception 0x02")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG, logging.INFO, logging.WARNING]


def test_backoff_doubles_to_its_maximum_with_jitter_and_resets():
    backoff = Backoff(1.0, 5.0, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == [0.8, 1.6, 3.2, 4.0, 4.0]
    backoff.reset()
    assert Backoff(1.0, 5.0, rand=lambda: 0.0).next() == backoff.next() / 0.8 == 1.0


@pytest.mark.parametrize("previous, now, expected", [
    (10.0, 10.5, (11.0, 0)),  # on time
    (10.0, 11.0, (12.0, 1)),  # exactly one tick late: that tick is skipped
    (10.0, 13.7, (14.0, 3)),  # overran three ticks
])
def test_next_tick_skips_missed_ticks(previous, now, expected):
    assert next_tick(previous, 1.0, now) == expected


def test_stats_of_two_parts_add_up():
    a = DriverStats(polls=3, failures=1, decode_errors=2, last_poll_latency=0.5, requests_per_poll=2)
    b = DriverStats(polls=4, reconnects=1, block_errors=5, requests_per_poll=3)
    total = a + b
    assert (total.polls, total.failures, total.reconnects, total.block_errors, total.decode_errors) == (7, 1, 1, 5, 2)
    assert (total.last_poll_latency, total.requests_per_poll) == (0.5, 5)
    assert (DriverStats() + DriverStats()).requests_per_poll is None


class Read:
    def __init__(self, name: str, rows: list[int]) -> None:
        self.name, self.rows = name, np.array(rows)

    def describe(self) -> str:
        return self.name


def poller(clock: Clock, reads: list[Read]) -> tuple[BlockPoller, DriverStats]:
    stats = DriverStats()
    rows = np.concatenate([read.rows for read in reads])
    return BlockPoller(reads, rows, health(clock), stats, Problems(log, "device plc1"), clock=clock), stats


def run_poll(block_poller: BlockPoller, sink: Sink, answers: dict[str, object], clock: Clock) -> bool:
    async def fetch(read: Read) -> np.ndarray:
        clock.now += 0.1
        answer = answers[read.name]
        if isinstance(answer, Exception):
            raise answer
        return np.asarray(answer, dtype=np.float64), clock.now

    return asyncio.run(block_poller.poll(sink, fetch))


A, B = Read("holding 0..1", [0, 1]), Read("input 0..0", [2])


def test_a_good_poll_writes_every_block_and_keeps_the_device_up():
    clock, sink = Clock(), Sink(3)
    block_poller, stats = poller(clock, [A, B])
    assert run_poll(block_poller, sink, {A.name: [1.0, np.nan], B.name: [3.0]}, clock)
    assert sink.value[[0, 2]].tolist() == [1.0, 3.0]
    assert sink.quality.tolist() == [Quality.GOOD, Quality.OUT_OF_RANGE, Quality.GOOD]
    assert len(sink.writes) == 2 and sink.events == []
    # each block carries the time its own answer arrived, not the end of the poll
    assert sink.read_at.tolist() == [pytest.approx(100.1), pytest.approx(100.1), pytest.approx(100.2)]
    assert (stats.polls, stats.failures, stats.requests_per_poll) == (1, 0, 2)
    assert stats.last_poll_latency == pytest.approx(0.2)


@pytest.mark.parametrize("whole_polls", [False, True])
def test_blocks_are_written_as_they_arrive_or_with_whole_polls_at_the_end(whole_polls):
    clock, sink = Clock(), Sink(3)
    block_poller, _ = poller(clock, [A, B])
    block_poller.whole_polls = whole_polls
    seen_before_b: list[int] = []

    async def fetch(read: Read):
        if read is B:
            seen_before_b.append(len(sink.writes))
        clock.now += 0.1
        return np.ones(len(read.rows)), clock.now

    asyncio.run(block_poller.poll(sink, fetch))
    assert seen_before_b == [0 if whole_polls else 1]
    assert len(sink.writes) == 2
    assert sink.read_at.tolist() == [pytest.approx(100.1), pytest.approx(100.1), pytest.approx(100.2)]


def test_garbage_fails_its_block_at_once_and_is_counted():
    clock, sink = Clock(), Sink(3)
    block_poller, stats = poller(clock, [A, B])
    garbage = BadAnswer("transaction id 7, expected 8", Quality.DECODE_ERROR)
    assert run_poll(block_poller, sink, {A.name: garbage, B.name: [3.0]}, clock)
    assert sink.quality.tolist() == [Quality.DECODE_ERROR, Quality.DECODE_ERROR, Quality.GOOD]
    assert sink.read_at.tolist() == [pytest.approx(100.1), pytest.approx(100.1), pytest.approx(100.2)]
    assert (stats.decode_errors, stats.block_errors, stats.polls) == (1, 1, 1) and sink.events == []


def test_a_failed_block_is_loud_once_and_says_when_it_is_readable_again(caplog):
    clock, sink = Clock(), Sink(3)
    block_poller, _ = poller(clock, [A, B])
    refused = BadAnswer("exception 0x02 (illegal data address)", Quality.DEVICE_ERROR)
    with caplog.at_level(logging.DEBUG, "test.kit"):
        for answer in (refused, refused, [1.0, 2.0], [1.0, 2.0]):
            assert run_poll(block_poller, sink, {A.name: answer, B.name: [3.0]}, clock)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "device plc1: holding 0..1: exception 0x02 (illegal data address)"),
        (logging.DEBUG, "device plc1: holding 0..1: exception 0x02 (illegal data address)"),
        (logging.INFO, "device plc1: holding 0..1 readable again"),
    ]


def test_a_healthy_poll_names_none_of_its_blocks():
    class Counted(Read):
        named = 0

        def describe(self) -> str:
            Counted.named += 1
            return self.name

    clock, sink = Clock(), Sink(3)
    reads = [Counted("holding 0..1", [0, 1]), Counted("input 0..0", [2])]
    block_poller, _ = poller(clock, reads)
    assert run_poll(block_poller, sink, {reads[0].name: [1.0, 2.0], reads[1].name: [3.0]}, clock)
    assert Counted.named == 0


def test_a_device_that_answers_only_garbage_is_down_for_undecodable_answers():
    clock, sink = Clock(), Sink(3)
    block_poller, stats = poller(clock, [A, B])
    garbage = BadAnswer("function 0x10, expected 0x03", Quality.DECODE_ERROR)
    assert not run_poll(block_poller, sink, {A.name: garbage, B.name: garbage}, clock)
    (down,) = sink.events
    assert down.data["cause"].startswith(UNDECODABLE) and down.data["quality"] == Quality.DECODE_ERROR
    assert "no response" not in down.data["cause"]
    assert sink.quality.tolist() == [Quality.DECODE_ERROR] * 3, "the rows keep the true reason"
    assert (stats.decode_errors, stats.failures, stats.polls) == (2, 1, 0)


def test_exceptions_only_give_the_first_blocks_reason():
    clock, sink = Clock(), Sink(3)
    block_poller, _ = poller(clock, [A, B])
    refused = BadAnswer("exception 0x02 (illegal data address)", Quality.DEVICE_ERROR)
    garbage = BadAnswer("wrong length", Quality.DECODE_ERROR)
    run_poll(block_poller, sink, {A.name: refused, B.name: garbage}, clock)
    assert sink.events[0].data["cause"] == "holding 0..1: exception 0x02 (illegal data address)"
    assert sink.events[0].data["quality"] == Quality.DEVICE_ERROR


def test_no_answer_marks_every_row_and_skips_the_rest_of_the_poll():
    clock, sink = Clock(), Sink(3)
    block_poller, stats = poller(clock, [A, B])
    asked: list[str] = []

    async def fetch(read: Read) -> np.ndarray:
        asked.append(read.name)
        raise NoAnswer("no response within 1 s")

    assert not asyncio.run(block_poller.poll(sink, fetch))
    assert asked == [A.name]
    assert sink.quality.tolist() == [Quality.COMM_FAILURE] * 3
    assert sink.events[0].data["cause"] == "holding 0..1: no response within 1 s"
    assert stats.failures == 1 and block_poller.health.is_down
    assert run_poll(block_poller, sink, {A.name: [1.0, 2.0], B.name: [3.0]}, clock)
    assert [event.kind for event in sink.events] == ["device_down", "device_up"]


@pytest.mark.parametrize("kind", sorted(drivers.DRIVERS))
def test_every_driver_kind_keeps_the_contract(kind):
    module_name, class_name = drivers.DRIVERS[kind][1].split(":")
    driver_class = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(inspect.getattr_static(driver_class, "from_config"), classmethod)
    assert inspect.iscoroutinefunction(driver_class.run)
    assert isinstance(inspect.getattr_static(driver_class, "is_down"), property)
