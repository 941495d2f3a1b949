"""The daemon's body writer (`body_text`) gives byte for byte the canonical JSON of `build_body`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.batchformat import body_json
from core.types import Event, Priority
from gatewayd.uplink.batch import RUNS_PAY, body_text, build_body
from store import BatchContent, SampleBlock

NAMES = {1: "PT-101", 2: "GD-301 (H₂S)", 3: 'quote " and \\ slash', 4: "TT-4", 5: "Ω\u2028", 6: "x"}
_FLOATS = st.sampled_from([0.0, -0.0, 1.0, 12.5, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308,
                           9007199254740993.0, 1e16, -1e16, 0.1 + 0.2, 65535.0]) | st.floats(width=64)
_TIMES = st.sampled_from([1700000000.0004, 1700000000.0005, 1700000000.0015, -1.5, 0.0, -0.0, np.nan,
                          1e20, -1e20, 9.3e15]) | st.floats(min_value=-1e12, max_value=1e12)


def content(tag_id, ts, value, quality, source_ts, events=(), names=NAMES) -> BatchContent:
    return BatchContent(SampleBlock(tag_id, ts, value, quality, source_ts), dict(names), list(events))


def same_bytes(batch: BatchContent) -> bytes:
    written = body_text(batch)
    assert written == body_json(build_body(batch))
    return written


def runs(draw_value, size):
    """A column of `size` values in runs (as a block read gives them), or of single values."""
    return st.lists(st.tuples(draw_value, st.integers(1, 3 * RUNS_PAY)), max_size=size).map(
        lambda pairs: [value for value, length in pairs for _ in range(length)])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_columns_in_runs_or_not_are_written_as_build_body_writes_them(data) -> None:
    ts = data.draw(runs(_TIMES, 12))
    size = len(ts)
    column = st.one_of(runs(_FLOATS, size), st.lists(_FLOATS, min_size=size, max_size=size))
    value = (data.draw(column) + [0.0] * size)[:size]
    source_ts = (data.draw(runs(_TIMES, size)) + [np.nan] * size)[:size]
    quality = (data.draw(runs(st.integers(0, 255), size)) + [0] * size)[:size]
    tag_id = (data.draw(runs(st.integers(1, 6), size)) + [1] * size)[:size]
    same_bytes(content(tag_id, ts, value, quality, source_ts))


@pytest.mark.parametrize("size", [0, 1, 2, RUNS_PAY, 1000])
def test_sizes_around_the_run_threshold(size) -> None:
    steps = np.arange(size)
    same_bytes(content((steps % 6) + 1, 1700000000.0 + steps // 125 * 0.001, steps.astype(float),
                       np.zeros(size), np.full(size, np.nan)))
    same_bytes(content(np.full(size, 4), np.full(size, 1700000000.25), np.full(size, -0.0),
                       np.full(size, 17), np.full(size, np.nan)))


def test_events_with_numpy_data_and_no_samples() -> None:
    events = [
        Event("alarm", 1700000001.0005, "PT-101", "PT-101 high", Priority.HIGH,
              {"value": np.float64(12.5), "limits": np.array([1.0, np.nan, np.inf]), "count": np.int64(2**62),
               "nested": {"nan": float("nan"), "list": [np.float32(0.25), -0.0]}, "big": 10**30}),
        Event("device_down", 1700000002.0, "plc1", "connection lost ✓"),
    ]
    same_bytes(content([], [], [], [], [], events))
    same_bytes(content([1, 2], [1.0, 1.0], [np.nan, 3.0], [17, 0], [np.nan, 2.0], events))


def test_an_infinite_time_fails_as_build_body_does() -> None:
    bad = content([1, 1, 1], [np.inf, 1.0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0], [np.nan] * 3)
    with pytest.raises(OverflowError):
        build_body(bad)
    with pytest.raises(OverflowError):
        body_text(bad)


def test_a_tag_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no name for tag ids \[9\]"):
        body_text(content([1, 9], [1.0, 1.0], [1.0, 2.0], [0, 0], [np.nan, np.nan]))


def test_the_same_tag_ids_with_other_names_get_their_own_names() -> None:
    """The tag list reused from the batch before is the one of the same names, not of the same ids
    (another store, or a database begun anew, numbers its tags its own way)."""
    columns = ([1, 2, 3], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [0, 0, 0], [np.nan] * 3)
    first = same_bytes(content(*columns))
    again = same_bytes(content(*columns))
    other = same_bytes(content(*columns, names={1: "A", 2: "B", 3: "C"}))
    assert first == again and b'"tags":["A","B","C"]' in other


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**53) - 2, 2**53 + 2) | st.sampled_from([0, 1, -1, 10**16, 10**16 - 2, -(10**16)]),
                min_size=2, max_size=30), st.booleans())
def test_whole_number_values_near_the_exact_limit(numbers, negative_zero) -> None:
    value = [float(n) for n in numbers] + ([-0.0] if negative_zero else [])
    size = len(value)
    same_bytes(content([1] * size, [1.0] * size, value, [0] * size, [np.nan] * size))


@pytest.mark.parametrize("sizes", [[3, 1000, 5, 2], [2, 70000, 9999, 10000, 10001]])
def test_each_tag_once_in_id_order(sizes) -> None:
    """A batch of one scan: its `tag` column counts 0..n-1, cut from a text kept for the largest n."""
    for size in sizes:
        ids = np.arange(1, size + 1)
        names = {int(t): f"T{t}" for t in ids}
        same_bytes(content(ids, np.full(size, 1.0), ids * 0.5, np.zeros(size), np.full(size, np.nan), names=names))
        same_bytes(content(ids[::-1], np.full(size, 1.0), ids * 0.5, np.zeros(size), np.full(size, np.nan),
                           names=names))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 2**20 - 1, 2**20, 2**40, -3]), max_size=12),
                min_size=1, max_size=5))
def test_names_kept_by_id_across_batches_of_one_mapping(batches) -> None:
    """The store hands one mapping to every batch and adds to it as tags are registered: names are kept by
    id across batches, ids seen for the first time (some beyond what is kept, some below 0) are named too."""
    names: dict[int, str] = {}
    for tag_ids in batches:
        for tag_id in tag_ids:
            names.setdefault(tag_id, f"N{tag_id}" if tag_id % 3 else f'q"{tag_id}\\')
        size = len(tag_ids)
        same_bytes(BatchContent(SampleBlock(tag_ids, [1.0] * size, [2.0] * size, [0] * size, [np.nan] * size),
                                names, []))


def test_a_name_learnt_after_a_batch_is_written_in_the_next() -> None:
    names = {1: "A"}
    block = SampleBlock([1, 2], [1.0, 1.0], [1.0, 2.0], [0, 0], [np.nan, np.nan])
    with pytest.raises(ValueError, match=r"no name for tag ids \[2\]"):
        body_text(BatchContent(block, names, []))
    names[2] = "B"
    assert b'"tags":["A","B"]' in same_bytes(BatchContent(block, names, []))
