"""Prometheus metrics of one ingest worker (served on --metrics-port): what it stored and what it found."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.accept import Outcome
from ingest.findings import Kind


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batches = Counter("gatewayd_ingest_batches", "Payloads received, by outcome "
                               "(stored, duplicate, held, heartbeat, dropped)", ["outcome"], registry=self.registry)
        self.samples = Counter("gatewayd_ingest_samples", "Samples stored", registry=self.registry)
        self.events = Counter("gatewayd_ingest_events", "Events stored", registry=self.registry)
        self.findings = Counter("gatewayd_ingest_findings", "Findings recorded, by kind", ["kind"],
                                registry=self.registry)
        self.database_errors = Counter("gatewayd_ingest_database_errors",
                                       "Groups rolled back on a database error and retried", registry=self.registry)
        self.pending = Gauge("gatewayd_ingest_pending", "Batches received and not yet acknowledged",
                             registry=self.registry)
        for kind in Kind:
            self.findings.labels(kind.label)
        self.late_arrivals = Counter("gatewayd_ingest_late_arrivals", "Batches stored below the highest seq "
                                     "accepted in their epoch (reordered or republished)", registry=self.registry)
        for outcome in ("stored", "duplicate", "held", "heartbeat", "dropped"):
            self.batches.labels(outcome)

    def count(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.batches.labels(outcome.label).inc()
            self.late_arrivals.inc(outcome.late)
            self.samples.inc(outcome.samples)
            self.events.inc(outcome.events)
            for finding in outcome.findings:
                self.findings.labels(finding.kind.label).inc()
