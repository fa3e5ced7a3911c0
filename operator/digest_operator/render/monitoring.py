"""Prometheus Operator objects: PodMonitor for worker metrics, PrometheusRule with the dead-letter alert."""

from __future__ import annotations

from typing import Any

from digest_api.spec import DigestPipelineSpec
from digest_operator.render import workload
from digest_operator.render.meta import Owner, metadata, selector_labels
from digest_operator.render.names import ChildNames

COMPONENT = "monitoring"
MONITORING_API = "monitoring.coreos.com/v1"
# Exported by the operator from status.deadLetter.count (see digest_operator.metrics).
DEAD_LETTER_METRIC = "digest_pipeline_dead_letter_messages"


def pod_monitor(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": metadata(owner, names.pod_monitor, COMPONENT, extra_labels=spec.monitoring.labels),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner, workload.COMPONENT)},
            "podMetricsEndpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "interval": spec.monitoring.scrape_interval,
            }],
        },
    }


def prometheus_rule(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    selector = f'pipeline_namespace="{owner.namespace}",pipeline="{owner.name}"'
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": metadata(owner, names.prometheus_rule, COMPONENT, extra_labels=spec.monitoring.labels),
        "spec": {
            "groups": [{
                "name": f"digest-pipeline.{owner.namespace}.{owner.name}",
                "rules": [{
                    "alert": "DigestPipelineDeadLetters",
                    "expr": f"max({DEAD_LETTER_METRIC}{{{selector}}}) > 0",
                    "for": spec.dead_letter.alert_after,
                    "labels": {"severity": "warning", "pipeline": owner.name},
                    "annotations": {
                        "summary": f"Dead-lettered digest requests in {spec.service_bus.queue}",
                        "description": (
                            f"DigestPipeline {owner.namespace}/{owner.name} has had {{{{ $value }}}} message(s) in "
                            f"{spec.service_bus.queue}/$DeadLetterQueue for {spec.dead_letter.alert_after}. "
                            f"Inspect with: digestctl dlq stats --queue {spec.service_bus.queue}"
                        ),
                    },
                }],
            }],
        },
    }
