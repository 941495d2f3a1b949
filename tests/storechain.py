"""The head of the store's hash chain, read from the database file the way the next boot reads it."""

from __future__ import annotations

import contextlib
import sqlite3

from store import Store


def chain_head(store: Store) -> tuple[int, bytes]:
    """Last seq used (0 if none) and the SHA-256 of its envelope (32 zero bytes if none), as committed."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        seq, digest = conn.execute("SELECT last_seq, last_hash FROM chain").fetchone()
    return seq, bytes(digest)
