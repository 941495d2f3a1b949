"""Capture files: received envelopes kept in arrival order, to verify or replay later.

Each frame is a u32 big-endian length followed by that many bytes. A capture cut short (the
receiver was killed mid-write) keeps every complete frame; the torn last one is reported.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # larger lengths mean a damaged file, not a batch

log = logging.getLogger(__name__)


def write_frame(fh: BinaryIO, data: bytes) -> None:
    """Append one frame; the caller flushes when it wants the frame on disk."""
    if len(data) > MAX_FRAME:
        raise ValueError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    fh.write(_LENGTH.pack(len(data)) + data)


def read_frames(path: Path, on_damage: Callable[[str], None] | None = None) -> Iterator[bytes]:
    """Yield each complete frame; a truncated or absurd tail goes to `on_damage` (default: log)."""
    report = on_damage or log.warning
    with open(path, "rb") as fh:
        offset = 0
        while header := fh.read(_LENGTH.size):
            if len(header) < _LENGTH.size:
                report(f"{path}: truncated frame header at byte {offset}")
                return
            (length,) = _LENGTH.unpack(header)
            if length > MAX_FRAME:
                report(f"{path}: frame length {length} at byte {offset} is not plausible; stopped")
                return
            data = fh.read(length)
            if len(data) < length:
                report(f"{path}: last frame at byte {offset} truncated ({len(data)} of {length} bytes)")
                return
            offset += _LENGTH.size + length
            yield data
