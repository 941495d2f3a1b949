"""The daemon's side of the batch format: turn what the store hands over into a body, then encode it.

The wire format itself (envelope, canonical JSON, signing, parsing, checking) is `core.batchformat`,
shared with every receiver; this module only converts the store's numpy columns and events into the
body's plain JSON values (milliseconds, null for non-finite numbers) and hands them to it.

`build_body` makes the body as a dict (what a receiver's `decode_body` returns); `body_text` writes the
same body straight to its canonical JSON, byte for byte what `body_json(build_body(content))` gives,
in a fraction of the time: a column whose neighbours repeat (gateway times, shared by every value of a
block read; quality; absent source times) is written a run at a time, each tag name's JSON is made
once and kept by tag id, and a batch whose tag ids ascend (one scan's blocks) skips sorting them. The
daemon encodes every batch with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.batchformat import encode_json_envelope

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


def _tag_names(tag_ids: list[int], names: dict[int, str]) -> list[str]:
    try:
        return list(map(names.__getitem__, tag_ids))
    except KeyError:
        raise ValueError(f"no name for tag ids {[t for t in tag_ids if t not in names]}") from None


def _events(content: BatchContent) -> list[dict]:
    return [
        {
            "ts": round(event.ts * 1000.0),
            "kind": event.kind,
            "source": event.source,
            "priority": int(event.priority),
            "message": event.message,
            "data": _finite_or_none(dict(event.data)),
        }
        for event in content.events
    ]


def build_body(content: BatchContent) -> dict:
    """The body as a dict, exactly what `decode_body` returns for the encoded batch."""
    samples = content.samples
    tag_ids, index = np.unique(samples.tag_id, return_inverse=True)
    return {
        "tags": _tag_names(tag_ids.tolist(), content.tag_names),
        "samples": {
            "tag": index.reshape(-1).tolist(),
            "ts": _ms(samples.ts),
            "value": _floats_or_none(samples.value),
            "quality": samples.quality.tolist(),
            "source_ts": _ms(samples.source_ts),
        },
        "events": _events(content),
    }


# what `core.batchformat.body_json` writes with, for the parts written apart
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
RUNS_PAY = 4  # a column is written a run at a time when its runs average at least this many values


def _runs(change: np.ndarray, texts: Any) -> str | None:
    """`[...]` of a column of n values where `change[i]` says value i+1 differs from value i and
    `texts(starts)` gives the JSON of the values at `starts`; None when the runs are too short to pay."""
    count = len(change) + 1
    starts = np.flatnonzero(change) + 1
    if (len(starts) + 1) * RUNS_PAY > count:
        return None
    starts = np.concatenate(([0], starts))
    lengths = np.diff(starts, append=count).tolist()
    return "[" + "".join([(text + ",") * length for text, length in zip(texts(starts), lengths)])[:-1] + "]"


class _CountingText:
    """`[0,1,...,n-1]`, cut from one text kept for the largest n so far: a batch of one scan carries
    each of its tags once, in the order of their ids, so its `tag` column counts up."""

    def __init__(self) -> None:
        self._kept: tuple[str, list[int]] = ("", [])  # the text for range(size), where each number ends

    def __call__(self, count: int) -> str:
        if not count:
            return "[]"
        text, ends = self._kept
        if count > len(ends):
            words = [str(k) for k in range(max(count, 2 * len(ends)))]
            text = ",".join(words)
            ends = np.cumsum([len(word) + 1 for word in words]).tolist()
            self._kept = (text, ends)
        return "[" + text[:ends[count - 1] - 1] + "]"


_counting_text = _CountingText()


def _ints_text(column: np.ndarray) -> str:
    if len(column) < 2:
        return _JSON(column.tolist())
    written = _runs(column[1:] != column[:-1], lambda at: [str(v) for v in column[at].tolist()])
    return _JSON(column.tolist()) if written is None else written


def _ms_text(seconds: np.ndarray) -> str:
    """The JSON of `_ms(seconds)`."""
    out = np.rint(np.asarray(seconds, dtype=np.float64) * 1000.0)
    if len(out) < 2 or np.isinf(out).any():  # with an infinity, _ms raises as it always did
        return _JSON(_ms(seconds))
    missing = np.isnan(out)
    ms = np.where(missing, 0.0, out).astype(np.int64)
    written = _runs((ms[1:] != ms[:-1]) | (missing[1:] != missing[:-1]),
                    lambda at: ["null" if gone else str(v) for v, gone in zip(ms[at].tolist(), missing[at].tolist())])
    return _JSON(_ms(seconds)) if written is None else written


def _floats_text(values: np.ndarray) -> str:
    """The JSON of `_floats_or_none(values)`; runs are of equal bits, so that 0.0 and -0.0 stay apart."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if len(values) < 2:
        return _JSON(_floats_or_none(values))
    bits, finite = values.view(np.int64), np.isfinite(values)
    if _whole_numbers(values, finite):  # what float.__repr__ writes for them: the integer and ".0"
        return str(values.astype(np.int64).tolist()).replace(", ", ".0,")[:-1] + ".0]"
    written = _runs((bits[1:] != bits[:-1]) | (finite[1:] != finite[:-1]),
                    lambda at: [repr(v) if ok else "null" for v, ok in zip(values[at].tolist(), finite[at].tolist())])
    return _JSON(_floats_or_none(values)) if written is None else written


def _whole_numbers(values: np.ndarray, finite: np.ndarray) -> bool:
    """Every value an integer below 2**53 in size (so exact in an int64, and written without an exponent
    below 1e16) and none of them -0.0 (which would come out as 0)."""
    return bool(finite.all() and (np.abs(values) < 2.0**53).all() and (values == np.trunc(values)).all()
                and not np.signbit(values[values == 0]).any())


class _NameTexts:
    """The JSON array of a batch's tag names, from each name's JSON kept by tag id.

    A batch names thousands of tags, a different run of them each time (blocks split batches anywhere),
    and writing the names anew was the body's largest part. Each name's JSON is made once, the first
    time its id is seen, and kept in an array indexed by id; a batch's array is those texts joined.
    The texts belong to one names mapping, whose ids keep their names (the store hands the same one
    until it learns new tags, and only adds): a different mapping starts afresh. Ids beyond MAX_KEPT_ID
    (or below 0) are looked up and written per batch.
    """

    MAX_KEPT_ID = 1 << 20

    def __init__(self) -> None:
        self._state: tuple[Mapping[int, str] | None, np.ndarray, np.ndarray] = (None, _NO_TEXTS, _NO_TEXTS)

    def __call__(self, tag_ids: np.ndarray, names: Mapping[int, str]) -> str:
        """`tag_ids` ascending and unique, as `np.unique` gives them."""
        if not len(tag_ids):
            return "[]"
        if tag_ids[0] < 0 or tag_ids[-1] >= self.MAX_KEPT_ID:
            return _JSON(_tag_names(tag_ids.tolist(), names))
        kept_for, texts, known = self._state
        if kept_for is not names:
            texts, known = _NO_TEXTS, _NO_TEXTS.astype(bool)
        if tag_ids[-1] >= len(texts):
            size = max(int(tag_ids[-1]) + 1, 2 * len(texts))
            texts = np.concatenate((texts, np.full(size - len(texts), None, dtype=object)))
            known = np.concatenate((known, np.zeros(size - len(known), dtype=bool)))
        missing = tag_ids[~known[tag_ids]].tolist()
        if missing:
            texts[missing] = [_JSON(name) for name in _tag_names(missing, names)]
            known[missing] = True
        self._state = (names, texts, known)  # replaced whole: one assignment, never half of it
        return "[" + ",".join(texts[tag_ids].tolist()) + "]"


_NO_TEXTS = np.empty(0, dtype=object)
_name_texts = _NameTexts()


def _tags_and_index(tag_id: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The batch's distinct tag ids ascending, and each sample's index into them; None for the index when
    the ids already ascend (a batch of one scan's blocks carries each tag once, in id order)."""
    if len(tag_id) < 2 or (tag_id[1:] > tag_id[:-1]).all():
        return tag_id, None
    tag_ids, index = np.unique(tag_id, return_inverse=True)
    return tag_ids, index.reshape(-1)


def body_text(content: BatchContent) -> bytes:
    """`body_json(build_body(content))`, written a column at a time (see the module's docstring)."""
    samples = content.samples
    tag_ids, index = _tags_and_index(samples.tag_id)
    return "".join((
        '{"tags":', _name_texts(tag_ids, content.tag_names),
        ',"samples":{"tag":', _counting_text(len(tag_ids)) if index is None else _ints_text(index),
        ',"ts":', _ms_text(samples.ts),
        ',"value":', _floats_text(samples.value),
        ',"quality":', _ints_text(samples.quality),
        ',"source_ts":', _ms_text(samples.source_ts),
        '},"events":', _JSON(_events(content)), "}",
    )).encode()


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
    return encode_json_envelope(body_text(content), gateway_id=gateway_id, boot_id=boot_id, seq=seq,
                                prev_hash=prev_hash, created_ms=created_ms, private_key=private_key, epoch=epoch)
