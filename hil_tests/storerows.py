"""What a gatewayd store's outbox holds, read the way a test compares it: samples decoded from their blocks.

    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = outbox_samples(conn)     # [(row id, place in its block, tag name, ts, value, quality)]
        total = rows_committed(conn)    # samples and events ever committed (outbox_committed)
"""

from __future__ import annotations

import sqlite3

from store.blocks import unpack

BLOCK = 2  # outbox.kind of a block of samples; 1 is an event


def outbox_samples(conn: sqlite3.Connection) -> list[tuple[int, int, str | None, float, float, int]]:
    """Every sample waiting in the outbox, in commit order; a tag the store has no name for reads None."""
    names = dict(conn.execute("SELECT id, name FROM tags"))
    found = []
    for row_id, body in conn.execute(f"SELECT id, body FROM outbox WHERE kind = {BLOCK} ORDER BY id"):
        block = unpack(body)
        found += [(row_id, place, names.get(tag_id), ts, value, quality) for place, (tag_id, ts, value, quality)
                  in enumerate(zip(block.tag_id.tolist(), block.ts.tolist(), block.value.tolist(),
                                   block.quality.tolist()))]
    return found


def rows_committed(conn: sqlite3.Connection) -> int:
    """Samples and events ever committed to the outbox (store.schema's `outbox_committed`)."""
    return conn.execute("SELECT rows FROM outbox_committed").fetchone()[0]
