"""Plain records that cross the store's boundary: what goes in, what comes out.

They hold numpy arrays and lists only, so the store stays ignorant of the batch format and the
daemon can hand a scan tick's samples over without building one Python object per value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.types import Event, Priority

_DTYPES = {
    "tag_id": np.int64,
    "ts": np.float64,
    "value": np.float64,
    "quality": np.uint8,
    "source_ts": np.float64,
}


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Samples as parallel arrays of one length.

    `ts` is gateway time and `source_ts` the device's own time (NaN when it gave none), both in
    Unix seconds; `value` may be NaN when the quality is bad. Inputs are converted to the dtypes
    above so callers may pass lists in tests.
    """

    tag_id: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    source_ts: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in _DTYPES.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        lengths = {len(getattr(self, name)) for name in _DTYPES}
        if len(lengths) != 1:
            raise ValueError(f"SampleBlock arrays differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.tag_id)

    @classmethod
    def empty(cls) -> SampleBlock:
        return cls(*([] for _ in _DTYPES))

    @classmethod
    def concat(cls, blocks: Sequence[SampleBlock]) -> SampleBlock:
        """One block of `blocks` in order (the same object when there is only one)."""
        if len(blocks) == 1:
            return blocks[0]
        return cls(*(np.concatenate([getattr(block, name) for block in blocks]) for name in _DTYPES))


@dataclass(frozen=True, eq=False)
class BatchContent:
    """What one batch carries, handed to the encoder: samples, names of (at least) their tags, and events."""

    samples: SampleBlock
    tag_names: Mapping[int, str]
    events: list[Event]

    @property
    def rows(self) -> int:
        return len(self.samples) + len(self.events)


@dataclass(frozen=True)
class Batch:
    """A built batch: its envelope bytes exactly as first published, and the outbox rows it carries."""

    seq: int
    envelope: bytes
    digest: bytes
    first_row: int
    last_row: int
    rows: int


@dataclass(frozen=True)
class ChainHead:
    """The chain as the store holds it: its epoch (None before the first, see `Store.begin_epoch`), the last
    seq built in it and that batch's envelope hash (0 and zeros before the first), and the JSON of the
    chain_reset that begins the epoch (None for the zero epoch)."""

    epoch: bytes | None
    seq: int
    digest: bytes
    reset: str | None


@dataclass(frozen=True)
class StoreStats:
    """Queue depths for metrics.

    `rows_pending` are in no batch yet, `rows_inflight` in a batch not yet acknowledged;
    `oldest_pending_ts` is the gateway time of the oldest row not acknowledged (either kind).
    `used_bytes` is what the disk budget counts; `history_bytes` and `history_days` what history keeps
    (its own bound); `evicted` and `gap_records` are the samples thinned
    or evicted for it and the gap events written, over the database's life.
    """

    rows_pending: int
    rows_inflight: int
    batches_pending: int
    oldest_pending_ts: float | None
    db_bytes: int
    last_seq: int
    used_bytes: int = 0
    evicted: int = 0
    gap_records: int = 0
    history_bytes: int = 0
    history_days: int = 0


def _json_default(obj):
    """Let rule kernels put numpy scalars and arrays into event data."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"event data value {obj!r} ({type(obj).__name__}) is not JSON-serialisable")


def event_body(event: Event) -> str:
    """The JSON an event is stored as (outbox and history `body`)."""
    return json.dumps(
        {
            "kind": event.kind,
            "source": event.source,
            "message": event.message,
            "priority": int(event.priority),
            "data": event.data,
        },
        default=_json_default,
    )


def event_from_row(ts: float, body: str) -> Event:
    """The event a stored (ts, body) row holds."""
    fields = json.loads(body)
    return Event(
        kind=fields["kind"],
        ts=ts,
        source=fields["source"],
        message=fields["message"],
        priority=Priority(fields["priority"]),
        data=fields["data"],
    )
