"""Prometheus metrics of the operator (one registry per operator instance, so tests can run several)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from digest_operator.render.monitoring import DEAD_LETTER_METRIC


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "digest_operator_reconciles", "Reconciles by result (ok, invalid, error).", ["result"], registry=r,
        )
        self.reconcile_seconds = Histogram(
            "digest_operator_reconcile_duration_seconds", "Duration of one reconcile.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.child_writes = Counter(
            "digest_operator_child_writes", "Writes to child objects by action.", ["action", "kind"], registry=r,
        )
        self.api_requests = Counter(
            "digest_operator_api_requests", "Kubernetes API requests made by the reconciler.", ["method"],
            registry=r,
        )
        self.api_errors = Counter(
            "digest_operator_api_errors", "Kubernetes API errors by HTTP status (0 = connection error).",
            ["code"], registry=r,
        )
        self.pipelines = Gauge(
            "digest_operator_pipelines", "Pipelines by Ready condition status.", ["ready"], registry=r,
        )
        self.dead_letters = Gauge(
            DEAD_LETTER_METRIC, "Messages in a pipeline's dead-letter queue at the last check.",
            ["pipeline_namespace", "pipeline"], registry=r,
        )
        self._ready: dict[tuple[str, str], str] = {}

    def observe_request(self, method: str, status: int) -> None:
        self.api_requests.labels(method).inc()
        if status == 0 or status >= 400:
            self.api_errors.labels(str(status)).inc()

    def set_pipeline(self, namespace: str, name: str, ready: str, dead_letters: int | None) -> None:
        self._ready[(namespace, name)] = ready
        self._refresh_ready()
        if dead_letters is not None:
            self.dead_letters.labels(namespace, name).set(dead_letters)

    def forget_pipeline(self, namespace: str, name: str) -> None:
        self._ready.pop((namespace, name), None)
        self._refresh_ready()
        with contextlib.suppress(KeyError):
            self.dead_letters.remove(namespace, name)

    def _refresh_ready(self) -> None:
        for value in ("True", "False", "Unknown"):
            self.pipelines.labels(value).set(sum(1 for v in self._ready.values() if v == value))
