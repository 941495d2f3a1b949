"""Samples stored as blocks: one SQLite row holds the samples of a scan tick as packed columns.

One row per value cost about 2 µs of SQLite work per value on each of insert, read and delete, most of
the daemon's CPU at 10,000 values a second (issue 18). A block is written, read and deleted as one row:
the per-value work left is numpy copying columns.

Layout of a block's bytes (little-endian): a header of the format version (1 byte) and the sample
count n (uint32), then the columns one after the other.

- Version 2 (written whenever every tag id fits in 32 bits): a flags byte (bit 0: the block has device
  times), then tag_id uint32[n], ts float64[n], value float64[n], quality uint8[n], and source_ts
  float64[n] only with bit 0. 21 bytes a sample without device times (a Modbus tag never has one),
  29 with: fewer pages to write, stage, read and delete than version 1's 33.
- Version 1 (written before, still read; and written for a tag id beyond 32 bits): tag_id int64[n],
  ts float64[n], value float64[n], source_ts float64[n], quality uint8[n].

NaN is stored as NaN (a value the device did not give, a source time it did not send); a block
without device times reads back with NaN for each.

    body = pack(block)           # bytes for the outbox's or history's BLOB column
    block = unpack(body)         # a SampleBlock over read-only views of `body`
    parts = split(block, 1000)   # blocks of at most 1,000 samples, in order
"""

from __future__ import annotations

import struct

import numpy as np

from store.records import SampleBlock

VERSION = 2  # what `pack` writes; version 1 is still read
_HEADER = struct.Struct("<BI")  # version, count: both versions
_FLAGS = struct.Struct("<B")  # version 2, after the header
DEVICE_TIMES = 1
_COLUMNS_V1 = (("tag_id", np.dtype("<i8")), ("ts", np.dtype("<f8")), ("value", np.dtype("<f8")),
               ("source_ts", np.dtype("<f8")), ("quality", np.dtype("u1")))
_COLUMNS_V2 = (("tag_id", np.dtype("<u4")), ("ts", np.dtype("<f8")), ("value", np.dtype("<f8")),
               ("quality", np.dtype("u1")))
_DEVICE_TIME_COLUMN = ("source_ts", np.dtype("<f8"))
MIN_BYTES_PER_SAMPLE = sum(dtype.itemsize for _, dtype in _COLUMNS_V2)  # 21: the most samples a byte count holds
_MAX_NARROW_ID = 0xFFFFFFFF


class BlockError(ValueError):
    """Bytes that are not a block this version can read (a newer format, or a damaged row)."""


def pack(block: SampleBlock) -> bytes:
    """The bytes of `block` (see the module docstring)."""
    ids = block.tag_id
    if len(ids) and (ids.min() < 0 or ids.max() > _MAX_NARROW_ID):
        header, layout = _HEADER.pack(1, len(block)), _COLUMNS_V1
    else:
        timed = not np.isnan(block.source_ts).all()
        header = _HEADER.pack(VERSION, len(block)) + _FLAGS.pack(DEVICE_TIMES if timed else 0)
        layout = _COLUMNS_V2 + ((_DEVICE_TIME_COLUMN,) if timed else ())
    parts = [header] + [np.ascontiguousarray(getattr(block, name), dtype=dtype).tobytes() for name, dtype in layout]
    return b"".join(parts)


def unpack(body: bytes) -> SampleBlock:
    """The samples `body` holds; raises BlockError when its header or length does not fit."""
    found = columns(body)
    if "source_ts" not in found:
        found["source_ts"] = np.full(len(found["ts"]), np.nan)
    return SampleBlock(**found)


def columns(body: bytes) -> dict[str, np.ndarray]:
    """The columns of `body` by SampleBlock field name, read-only views of it (no conversion; no source_ts
    for a block without device times); raises BlockError when its header or length does not fit."""
    if len(body) < _HEADER.size:
        raise BlockError(f"a block of {len(body)} bytes has no header")
    version, count = _HEADER.unpack_from(body)
    if version == 1:
        layout, offset = _COLUMNS_V1, _HEADER.size
    elif version == 2 and len(body) > _HEADER.size:
        flags = body[_HEADER.size]
        if flags & ~DEVICE_TIMES:
            raise BlockError(f"block flags {flags:#04x}; this gatewayd knows {DEVICE_TIMES:#04x}")
        layout = _COLUMNS_V2 + ((_DEVICE_TIME_COLUMN,) if flags & DEVICE_TIMES else ())
        offset = _HEADER.size + _FLAGS.size
    elif version == 2:
        raise BlockError(f"a block of {len(body)} bytes has no flags")
    else:
        raise BlockError(f"block format version {version}; this gatewayd reads versions 1 and 2")
    expected = offset + count * sum(dtype.itemsize for _, dtype in layout)
    if len(body) != expected:
        raise BlockError(f"a block of {count} samples takes {expected} bytes, not {len(body)}")
    found = {}
    for name, dtype in layout:
        found[name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
    return found


def count(body: bytes) -> int:
    """The number of samples in a block, read from its header alone."""
    return _HEADER.unpack_from(body)[1]


def split(block: SampleBlock, size: int) -> list[SampleBlock]:
    """`block` cut into consecutive blocks of at most `size` samples (none for an empty block)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    if len(block) <= size:
        return [block] if len(block) else []
    return [SampleBlock(*(getattr(block, name)[start:start + size] for name in _FIELDS))
            for start in range(0, len(block), size)]


_FIELDS = ("tag_id", "ts", "value", "quality", "source_ts")  # SampleBlock's own order
