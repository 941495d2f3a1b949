"""SQLite store: the outbox of samples and events, built batches and the chain head.

    store = Store.open(Path("/var/lib/gatewayd/gatewayd.db"))
    store.append(samples, events)                       # once per scan tick
    batch = store.build_batch(5000, make_envelope)      # then publish batch.envelope
    store.acknowledge(batch.seq)                        # on PUBACK: the rows leave the outbox (history has them)
    History.open(path).samples("TI101", start, end)     # read-only, from another thread or process
"""

from store.history import History, HistoryError, TagHistory
from store.keeping import Keeping
from store.outbox import Store, is_disk_full, read_state
from store.records import Batch, BatchContent, ChainHead, SampleBlock, StoreStats
from store.retention import Retention
from store.schema import SchemaError, pending_migrations

__all__ = [
    "Batch",
    "BatchContent",
    "ChainHead",
    "History",
    "HistoryError",
    "Keeping",
    "Retention",
    "SampleBlock",
    "SchemaError",
    "Store",
    "StoreStats",
    "TagHistory",
    "is_disk_full",
    "pending_migrations",
    "read_state",
]
