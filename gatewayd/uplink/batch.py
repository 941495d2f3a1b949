"""The daemon's side of the batch format: turn what the store hands over into a body, then encode it.

The wire format itself (envelope, canonical JSON, signing, parsing, checking) is `core.batchformat`,
shared with every receiver; this module only converts the store's numpy columns and events into the
body's plain JSON values (milliseconds, null for non-finite numbers) and hands them to it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.batchformat import encode_envelope

if TYPE_CHECKING:
    from store.records import BatchContent


def _ms(seconds: np.ndarray) -> list[int | None]:
    """Unix seconds to integer milliseconds, rounded to nearest; NaN becomes None.

    Whole columns at a time (a batch carries thousands of samples): only the NaN places, if any, are
    visited one by one."""
    out = np.rint(np.asarray(seconds, dtype=np.float64) * 1000.0)
    missing = np.isnan(out)
    if np.isinf(out).any():  # int() raises for them, as it always did
        return [None if math.isnan(v) else int(v) for v in out.tolist()]
    if missing.all():
        return [None] * len(out)
    return _none_at(np.where(missing, 0.0, out).astype(np.int64).tolist(), missing)


def _floats_or_none(values: np.ndarray) -> list[float | None]:
    """A float column as a list, with None for NaN and infinity (what `_finite_or_none` writes for them)."""
    values = np.asarray(values, dtype=np.float64)
    return _none_at(values.tolist(), ~np.isfinite(values))


def _none_at(listed: list, where: np.ndarray) -> list:
    for index in np.flatnonzero(where).tolist():
        listed[index] = None
    return listed


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: write null (the quality code says why there is no value)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _finite_or_none(value.tolist())
    return value


def build_body(content: BatchContent) -> dict:
    """The body as a dict, exactly what `decode_body` returns for the encoded batch."""
    samples = content.samples
    tag_ids, index = np.unique(samples.tag_id, return_inverse=True)
    tag_ids = tag_ids.tolist()
    missing = [t for t in tag_ids if t not in content.tag_names]
    if missing:
        raise ValueError(f"no name for tag ids {missing}")
    return {
        "tags": [content.tag_names[t] for t in tag_ids],
        "samples": {
            "tag": index.reshape(-1).tolist(),
            "ts": _ms(samples.ts),
            "value": _floats_or_none(samples.value),
            "quality": samples.quality.tolist(),
            "source_ts": _ms(samples.source_ts),
        },
        "events": [
            {
                "ts": round(event.ts * 1000.0),
                "kind": event.kind,
                "source": event.source,
                "priority": int(event.priority),
                "message": event.message,
                "data": _finite_or_none(dict(event.data)),
            }
            for event in content.events
        ],
    }


def encode_batch(
    content: BatchContent,
    *,
    gateway_id: str,
    boot_id: bytes,
    seq: int,
    prev_hash: bytes,
    created_ms: int,
    private_key: Ed25519PrivateKey,
    epoch: bytes | None = None,
) -> bytes:
    """Encode, compress and sign one batch of store content; returns the complete envelope (protocol 1.1 with
    an epoch, 1.0 without: see `core.batchformat.encode_envelope`)."""
    return encode_envelope(build_body(content), gateway_id=gateway_id, boot_id=boot_id, seq=seq,
                           prev_hash=prev_hash, created_ms=created_ms, private_key=private_key, epoch=epoch)
