"""Samples stored as blocks: one SQLite row holds the samples of a scan tick as packed columns.

One row per value cost about 2 µs of SQLite work per value on each of insert, read and delete, most of
the daemon's CPU at 10,000 values a second (issue 18). A block is written, read and deleted as one row:
the per-value work left is numpy copying columns.

Layout of a block's bytes (little-endian): a header of the format version (1 byte, 1) and the sample
count n (uint32), then the columns one after the other: tag_id int64[n], ts float64[n], value
float64[n], source_ts float64[n], quality uint8[n]. NaN is stored as NaN (a value the device did not
give, a source time it did not send).

    body = pack(block)           # bytes for the outbox's or history's BLOB column
    block = unpack(body)         # a SampleBlock over read-only views of `body`
    parts = split(block, 1000)   # blocks of at most 1,000 samples, in order
"""

from __future__ import annotations

import struct

import numpy as np

from store.records import SampleBlock

VERSION = 1
_HEADER = struct.Struct("<BI")
_COLUMNS = (("tag_id", np.dtype("<i8")), ("ts", np.dtype("<f8")), ("value", np.dtype("<f8")),
            ("source_ts", np.dtype("<f8")), ("quality", np.dtype("u1")))
BYTES_PER_SAMPLE = sum(dtype.itemsize for _, dtype in _COLUMNS)  # 33


class BlockError(ValueError):
    """Bytes that are not a block this version can read (a newer format, or a damaged row)."""


def pack(block: SampleBlock) -> bytes:
    """The bytes of `block` (see the module docstring)."""
    parts = [_HEADER.pack(VERSION, len(block))]
    parts += [np.ascontiguousarray(getattr(block, name), dtype=dtype).tobytes() for name, dtype in _COLUMNS]
    return b"".join(parts)


def unpack(body: bytes) -> SampleBlock:
    """The samples `body` holds; raises BlockError when its header or length does not fit."""
    return SampleBlock(**columns(body))


def columns(body: bytes) -> dict[str, np.ndarray]:
    """The columns of `body` by SampleBlock field name, read-only views of it (no copy, no conversion);
    raises BlockError when its header or length does not fit."""
    if len(body) < _HEADER.size:
        raise BlockError(f"a block of {len(body)} bytes has no header")
    version, count = _HEADER.unpack_from(body)
    if version != VERSION:
        raise BlockError(f"block format version {version}; this gatewayd reads version {VERSION}")
    if len(body) != _HEADER.size + count * BYTES_PER_SAMPLE:
        raise BlockError(f"a block of {count} samples takes {_HEADER.size + count * BYTES_PER_SAMPLE} bytes, "
                         f"not {len(body)}")
    found, offset = {}, _HEADER.size
    for name, dtype in _COLUMNS:
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
