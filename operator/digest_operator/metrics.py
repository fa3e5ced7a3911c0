"""Prometheus metrics of the operator (one registry per operator instance, so tests can run several)."""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from digest_operator.render.monitoring import DEAD_LETTER_METRIC

OUTCOMES = ("requeued", "parked", "left", "failed")


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
        labels = ["pipeline_namespace", "pipeline"]
        self.dead_letter_oldest = Gauge(
            "digest_pipeline_dead_letter_oldest_enqueued_timestamp_seconds",
            "Enqueued time of the oldest dead-lettered message (Unix seconds; age = time() - value).", labels,
            registry=r,
        )
        self.dead_letter_checked = Gauge(
            "digest_pipeline_dead_letter_last_check_timestamp_seconds",
            "When the DLQ monitor last reported (Unix seconds).", labels, registry=r,
        )
        self.dead_letter_circuit = Gauge(
            "digest_pipeline_dead_letter_circuit_open", "1 while the requeue policy's circuit breaker is open.",
            labels, registry=r,
        )
        self.dead_letter_last_run = Gauge(
            "digest_pipeline_dead_letter_last_run_messages",
            "Messages per outcome (requeued, parked, left, failed) in the last DLQ monitor run.",
            [*labels, "outcome"], registry=r,
        )
        self.dead_letter_handled = Counter(
            "digest_pipeline_dead_letter_handled",
            "Messages per outcome over the monitor runs this operator instance has seen.", [*labels, "outcome"],
            registry=r,
        )
        self._ready: dict[tuple[str, str], str] = {}
        self._last_run: dict[tuple[str, str], str] = {}

    def observe_request(self, method: str, status: int) -> None:
        self.api_requests.labels(method).inc()
        if status == 0 or status >= 400:
            self.api_errors.labels(str(status)).inc()

    def set_pipeline(self, namespace: str, name: str, ready: str, dead_letters: int | None) -> None:
        self._ready[(namespace, name)] = ready
        self._refresh_ready()
        if dead_letters is not None:
            self.dead_letters.labels(namespace, name).set(dead_letters)

    def set_dead_letter(self, namespace: str, name: str, status: dict[str, Any] | None) -> None:
        """Export `status.deadLetter`; a monitor run is counted once, when its time is first seen."""
        if not status:
            return
        key = (namespace, name)
        oldest = _timestamp(status.get("oldestEnqueuedTime"))
        if oldest is not None:
            self.dead_letter_oldest.labels(namespace, name).set(oldest)
        elif status.get("count") == 0:
            with contextlib.suppress(KeyError):
                self.dead_letter_oldest.remove(namespace, name)
        checked = _timestamp(status.get("lastCheckedTime"))
        if checked is not None:
            self.dead_letter_checked.labels(namespace, name).set(checked)
        if status.get("circuit") is not None:
            self.dead_letter_circuit.labels(namespace, name).set(1 if status["circuit"] == "Open" else 0)
        run = status.get("lastRun") or {}
        for outcome in OUTCOMES:
            self.dead_letter_last_run.labels(namespace, name, outcome).set(int(run.get(outcome) or 0))
        run_key = f"{run.get('time')}/{run.get('pod')}"
        if run.get("time") and self._last_run.get(key) != run_key:
            self._last_run[key] = run_key
            for outcome in OUTCOMES:
                self.dead_letter_handled.labels(namespace, name, outcome).inc(int(run.get(outcome) or 0))

    def forget_pipeline(self, namespace: str, name: str) -> None:
        self._ready.pop((namespace, name), None)
        self._last_run.pop((namespace, name), None)
        self._refresh_ready()
        for gauge in (self.dead_letters, self.dead_letter_oldest, self.dead_letter_checked, self.dead_letter_circuit):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for outcome in OUTCOMES:
            for metric in (self.dead_letter_last_run, self.dead_letter_handled):
                with contextlib.suppress(KeyError):
                    metric.remove(namespace, name, outcome)

    def _refresh_ready(self) -> None:
        for value in ("True", "False", "Unknown"):
            self.pipelines.labels(value).set(sum(1 for v in self._ready.values() if v == value))
