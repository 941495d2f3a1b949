"""History's unit of storage: one tag's samples of one compaction, as packed records in one row's bytes.

A chunk is what a query for one tag reads: its samples only, in commit order, without the tag id an
outbox block repeats per sample, and without the device-time field when no sample of the chunk has a
device time (a Modbus tag never has one). Its row's `layout` says which:

- TIMES (1): records of ts float64, value float64, quality uint8 (17 bytes a sample);
- DEVICE_TIMES (2): the same and source_ts float64 (25 bytes).

Little-endian, no padding, the count being the length over the record size. The records of all the
chunks of a compaction are written into one array at once and each chunk's bytes are a slice of it
(no copy per chunk): packing costs about the same per compaction whatever the number of tags.

    layouts, bodies = pack_groups(ts, value, quality, source_ts, bounds)  # chunk i: [bounds[i], bounds[i + 1])
    ts, value, quality, source_ts = unpack(layout, body)                  # numpy views; source_ts None for TIMES
"""

from __future__ import annotations

import numpy as np

TIMES, DEVICE_TIMES = 1, 2
_RECORDS = {
    TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1")]),
    DEVICE_TIMES: np.dtype([("ts", "<f8"), ("value", "<f8"), ("quality", "u1"), ("source_ts", "<f8")]),
}


class ChunkError(ValueError):
    """A chunk this version cannot read (a newer layout, or a damaged row)."""


def pack_groups(ts: np.ndarray, value: np.ndarray, quality: np.ndarray, source_ts: np.ndarray,
                bounds: np.ndarray) -> tuple[list[int], list[memoryview]]:
    """The layout and bytes of the chunk of each slice [bounds[i], bounds[i + 1]) of the columns, in order.

    The bytes are read-only views into one array per layout, valid as long as any of them is referenced.
    """
    starts, ends = bounds[:-1], bounds[1:]
    timed = ~np.isnan(source_ts)
    device = np.add.reduceat(timed, starts) > 0 if len(ts) and timed.any() else np.zeros(len(starts), bool)
    views = {}
    for layout in (TIMES, DEVICE_TIMES) if device.any() else (TIMES,):
        records = np.empty(len(ts), _RECORDS[layout])
        records["ts"], records["value"], records["quality"] = ts, value, quality
        if layout == DEVICE_TIMES:
            records["source_ts"] = source_ts
        views[layout] = (memoryview(records.view(np.uint8)).toreadonly(), records.itemsize)
    layouts = np.where(device, DEVICE_TIMES, TIMES).tolist()
    bodies = []
    for layout, first, last in zip(layouts, starts.tolist(), ends.tolist()):
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
