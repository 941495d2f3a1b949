"""The value path: from a driver's write to the store's outbox.

A driver writes through its `sink.DeviceSink` into the `points.PointTable` (one row a tag; every-read
tags also into `readlog`); each `scan.Scanner` tick marks stale rows, runs the rule engine, picks the
samples to report, feeds `dataquality`, and appends samples and events to its outbox: the
`clock.ClockGuard`, which flags samples stamped around a wall-clock step, over the store's spill.
"""
