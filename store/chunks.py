"""History's unit of storage: one tag's samples of one compaction, as packed records in one row's bytes.

A chunk is what a query for one tag reads: its samples only, in commit order, without the tag id an
outbox block repeats per sample, and without the device-time field when no sample of the chunk has a
device time (a Modbus tag never has one). Its row's `layout` says which:

- TIMES (1): records of ts float64, value float64, quality uint8 (17 bytes a sample);
- DEVICE_TIMES (2): the same and source_ts float64 (25 bytes).

Little-endian, no padding, the count being the length over the record size. The records of all the
chunks of a compaction are written into one array at once and each chunk's bytes are a slice of it
(no copy per chunk): packing costs about the same per compaction whatever the number of tags.

    layouts, bodies = pack_groups(order, ts, value, quality, source_ts, bounds)  # i: order[bounds[i]:bounds[i + 1]]
    ts, value, quality, source_ts = unpack(layout, body)  # numpy views; source_ts None for TIMES
"""

from __future__ import annotations

import numpy as np

TIMES, DEVICE_TIMES = 1, 2
GATHER_STEP = 1 << 16  # rows gathered into the records at a time
_RECORDS = {
    TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1")]),
    DEVICE_TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1"), ("source_ts", "<f8")]),
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
    starts = bounds[:-1]
    device = np.zeros(len(starts), bool)
    if source_ts is not None and len(order):
        device = np.add.reduceat(~np.isnan(source_ts[order]), starts) > 0
    views = {}
    for layout in (TIMES, DEVICE_TIMES) if device.any() else (TIMES,):
        records = np.empty(len(order), _RECORDS[layout])
        for name, column in (("ts", ts), ("value", value), ("quality", quality), ("source_ts", source_ts)):
            if name in _RECORDS[layout].names:
                for first in range(0, len(order), GATHER_STEP):  # a step at a time: no sorted copy of a column
                    records[name][first:first + GATHER_STEP] = column[order[first:first + GATHER_STEP]]
        views[layout] = (memoryview(records.view(np.uint8)).toreadonly(), records.itemsize)
    layouts = np.where(device, DEVICE_TIMES, TIMES).tolist()
    bodies = []
    for layout, first, last in zip(layouts, starts.tolist(), bounds[1:].tolist()):
        view, size = views[layout]
        bodies.append(view[first * size:last * size])
    return layouts, bodies


def unpack(layout: int, body: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """ts, value, quality and source_ts of a chunk (None when its layout has no device times)."""
    records = _RECORDS.get(layout)
    if records is None:
        raise ChunkError(f"chunk layout {layout}; this gatewayd reads layouts {sorted(_RECORDS)}")
    if len(body) % records.itemsize:
        raise ChunkError(f"a chunk of layout {layout} is whole records of {records.itemsize} bytes, "
                         f"not {len(body)} bytes")
    rows = np.frombuffer(body, records)
    return rows["ts"], rows["value"], rows["quality"], rows["source_ts"] if layout == DEVICE_TIMES else None
