"""gatewayd-ingest: the receiving service a platform runs.

Workers consume signed batches from an MQTT broker through a shared subscription, check them against
per-gateway chain state kept in PostgreSQL (so any worker can take any gateway's batch), write samples and
events into day-partitioned tables with COPY, record findings, and acknowledge a batch only once it is
committed. It shares the wire format (core.batchformat) with the daemon and nothing else.
docs/platform.md describes it.
"""
