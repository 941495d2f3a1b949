"""History's unit of storage: one tag's samples of one compaction, as packed records in one row's bytes.

A chunk is what a query for one tag reads: its samples only, in time order (ties in commit order),
without the tag id an outbox block repeats per sample, without the device-time field when no sample
of the chunk has a device time (a Modbus tag never has one), and with values as float32 when every
value of the chunk is one exactly (a register read unscaled, a digital state, NaN): the value a
query reads back is the same float64. Its row's `layout` says which:

- TIMES (1): records of ts float64, value float64, quality uint8 (17 bytes a sample);
- DEVICE_TIMES (2): the same and source_ts float64 (25 bytes);
- NARROW_TIMES (3): ts float64, value float32, quality uint8 (13 bytes);
- NARROW_DEVICE_TIMES (4): the same and source_ts float64 (21 bytes).

Little-endian, no padding, the count being the length over the record size. The records of all the
chunks of a compaction of one layout are written into one array at once and each chunk's bytes are a
slice of it (no copy per chunk): packing costs about the same per compaction whatever the number of
tags. Fewer bytes a sample is fewer pages for the compaction to write and history to keep.

    layouts, bodies = pack_groups(order, ts, value, quality, source_ts, bounds)  # i: order[bounds[i]:bounds[i + 1]]
    ts, value, quality, source_ts = unpack(layout, body)  # value float64; source_ts None without device times
"""

from __future__ import annotations

import numpy as np

TIMES, DEVICE_TIMES, NARROW_TIMES, NARROW_DEVICE_TIMES = 1, 2, 3, 4  # 1 + device times + 2 * narrow values
GATHER_STEP = 1 << 16  # rows gathered into the records at a time
_RECORDS = {
    TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1")]),
    DEVICE_TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1"), ("source_ts", "<f8")]),
    NARROW_TIMES: np.dtype([("ts", "<f8"), ("value", "<f4"), ("quality", "u1")]),
    NARROW_DEVICE_TIMES: np.dtype([("ts", "<f8"), ("value", "<f4"), ("quality", "u1"), ("source_ts", "<f8")]),
}


class ChunkError(ValueError):
    """A chunk this version cannot read (a newer layout, or a damaged row)."""


def pack_groups(order: np.ndarray, ts: np.ndarray, value: np.ndarray, quality: np.ndarray,
                source_ts: np.ndarray | None, bounds: np.ndarray) -> tuple[list[int], list[memoryview]]:
    """The layout and bytes of the chunk of each slice [bounds[i], bounds[i + 1]) of the columns taken in
    `order` (`source_ts` None: no sample has a device time).

    The columns are gathered in `order` straight into the records, GATHER_STEP rows at a time, with no
    sorted copy of a whole column in between (a compaction's memory is its columns and its records). The
    bytes are read-only views into one array per layout, valid as long as any of them is referenced.
    """
    starts, lengths = bounds[:-1], np.diff(bounds)
    device = np.zeros(len(starts), bool)
    narrow = np.ones(len(starts), bool)
    if len(order):
        if source_ts is not None:
            device = np.add.reduceat(~np.isnan(source_ts[order]), starts) > 0
        narrow = ~np.logical_or.reduceat(_in_steps(_wide, order, value), starts)
    layouts = TIMES + device + 2 * narrow
    bodies: list[memoryview] = [memoryview(b"")] * len(starts)
    for layout in np.unique(layouts).tolist():
        mine = layouts == layout
        rows = order if mine.all() else order[np.repeat(mine, lengths)]
        records = np.empty(len(rows), _RECORDS[layout])
        for name, column in (("ts", ts), ("value", value), ("quality", quality), ("source_ts", source_ts)):
            if name in records.dtype.names:
                for first in range(0, len(rows), GATHER_STEP):  # a step at a time: no sorted copy of a column
                    records[name][first:first + GATHER_STEP] = column[rows[first:first + GATHER_STEP]]
        view, size = memoryview(records.view(np.uint8)).toreadonly(), records.itemsize
        ends = np.cumsum(lengths[mine]) * size
        for chunk, first, last in zip(np.flatnonzero(mine).tolist(), (ends - lengths[mine] * size).tolist(),
                                      ends.tolist()):
            bodies[chunk] = view[first:last]
    return layouts.tolist(), bodies


def _wide(value: np.ndarray) -> np.ndarray:
    """Which values a float32 does not hold exactly (NaN it does: any NaN reads back as NaN)."""
    with np.errstate(over="ignore"):  # beyond float32's range: inf, so not equal
        return ~((value.astype(np.float32) == value) | np.isnan(value))


def _in_steps(function, order: np.ndarray, column: np.ndarray) -> np.ndarray:
    """function(column[order]) computed GATHER_STEP rows at a time: no sorted copy of the column."""
    return np.concatenate([function(column[order[first:first + GATHER_STEP]])
                           for first in range(0, len(order), GATHER_STEP)])


def unpack(layout: int, body: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """ts, value (float64 whatever the layout), quality and source_ts of a chunk (None when its layout
    has no device times)."""
    records = _RECORDS.get(layout)
    if records is None:
        raise ChunkError(f"chunk layout {layout}; this gatewayd reads layouts {sorted(_RECORDS)}")
    if len(body) % records.itemsize:
        raise ChunkError(f"a chunk of layout {layout} is whole records of {records.itemsize} bytes, "
                         f"not {len(body)} bytes")
    rows = np.frombuffer(body, records)
    device = layout in (DEVICE_TIMES, NARROW_DEVICE_TIMES)
    return rows["ts"], rows["value"].astype(np.float64), rows["quality"], rows["source_ts"] if device else None
