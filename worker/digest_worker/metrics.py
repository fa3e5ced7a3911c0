"""Prometheus metrics of one worker (own registry, so several workers can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("digest_worker_messages", "Messages settled, by outcome and reason.",
                                ["outcome", "reason"], registry=r)
        self.duration = Histogram("digest_worker_processing_seconds", "Time from receipt to settlement.",
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                  registry=r)
        self.in_flight = Gauge("digest_worker_in_flight", "Messages being processed.", registry=r)
        self.teams_requests = Counter("digest_worker_teams_requests", "Bot Connector requests by status class.",
                                      ["status_class"], registry=r)
        self.lock_renewals = Counter("digest_worker_lock_renewals", "Message lock renewals, by result.",
                                     ["result"], registry=r)
        self.last_success = Gauge("digest_worker_last_success_timestamp_seconds",
                                  "Unix time of the last message completed.", registry=r)
        self.paused = Gauge("digest_worker_paused", "1 while a systemic failure pauses the worker.", registry=r)
        self.systemic = Counter("digest_worker_systemic_failures", "Systemic failures that paused the worker.",
                                ["kind"], registry=r)
        self.reconnects = Counter("digest_worker_reconnects", "Service Bus reconnects after an error.", registry=r)
