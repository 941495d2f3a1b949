"""Carrying the value path over a reload that rebuilt it: the tags that remain keep their values,
qualities and read times, their report-by-exception state, their data-quality figures, and the
alarm and bypass states go over by id; the new scanner takes the running outbox and tap."""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np

from gatewayd.values.points import PointTable
from gatewayd.values.scan import Scanner


def common_rows(old_names: Sequence[str], new_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the tags present in both tables: (rows in the old table, rows in the new one)."""
    old_rows = {name: row for row, name in enumerate(old_names)}
    pairs = [(old_rows[name], row) for row, name in enumerate(new_names) if name in old_rows]
    old_index = np.array([pair[0] for pair in pairs], dtype=np.int64)
    new_index = np.array([pair[1] for pair in pairs], dtype=np.int64)
    return old_index, new_index


def copy_points(old: PointTable, new: PointTable, old_rows: np.ndarray, new_rows: np.ndarray) -> None:
    """Current values, qualities and their times of the remaining tags; pending events move along, and the
    new table wakes the same scan loop."""
    for name in ("value", "quality", "source_ts", "gateway_ts", "updated", "reads", "held_quality"):
        getattr(new, name)[new_rows] = getattr(old, name)[old_rows]
    new.pending_events = old.take_events()
    new.changed = old.changed


REPORT_STATE = ("last_value", "last_quality", "last_time", "last_update")


def copy_report_state(old: Scanner, new: Scanner, old_rows: np.ndarray, new_rows: np.ndarray) -> None:
    """Report-by-exception state of the remaining tags, so that a reload sends no burst of repeats; the
    scan counters, the outbox and the tap carry over whole."""
    for name in REPORT_STATE:
        getattr(new, name)[new_rows] = getattr(old, name)[old_rows]
    new.stats, new.outbox, new.tap = old.stats, old.outbox, old.tap


def carry_over(old: Scanner, new: Scanner) -> list[str]:
    """Move the state of `old` (its table, engine and data quality) into `new`, built for the reloaded
    configuration; returns notes about rule state that no longer matches it. Call after the old
    scanner's last tick and before any poll writes into the new table."""
    old_rows, new_rows = common_rows([tag.name for tag in old.table.tags], [tag.name for tag in new.table.tags])
    copy_points(old.table, new.table, old_rows, new_rows)
    notes = new.engine.restore(old.engine.state_dict())
    if old.data_quality is not None:  # the assembly gives every new scanner one
        new.data_quality.adopt(old.data_quality, old_rows, new_rows)
    copy_report_state(old, new, old_rows, new_rows)
    return notes
