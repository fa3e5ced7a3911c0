"""The NetworkPolicy of a pipeline's worker and DLQ monitor pods.

Ingress: only the worker's metrics port (Prometheus scrapes it; the kubelet's probes use the same port). Egress:
DNS, Service Bus (AMQP 5671; 443 for AMQP over WebSockets, the management API and Entra ID tokens), the Bot
Connector (443), PostgreSQL (5432) when a database URL is configured, and the spec's extra rules. Service Bus,
Teams and Entra ID have no fixed addresses, so the default rules restrict ports, not destinations.
"""

from __future__ import annotations

from typing import Any

from digest_api.spec import DigestPipelineSpec
from digest_operator.render import dlq_monitor, workload
from digest_operator.render.meta import Owner, metadata, selector_labels
from digest_operator.render.names import ChildNames

API_VERSION = "networking.k8s.io/v1"
COMPONENT = "network-policy"
DNS_PORT = 53
AMQPS_PORT = 5671
HTTPS_PORT = 443
POSTGRES_PORT = 5432


def pod_selector(owner: Owner) -> dict[str, Any]:
    """The pipeline's worker and monitor pods (and no one else's)."""
    return {
        "matchLabels": {k: v for k, v in selector_labels(owner, workload.COMPONENT).items()
                        if k != "app.kubernetes.io/component"},
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                              "values": [workload.COMPONENT, dlq_monitor.COMPONENT]}],
    }


def _port(port: int | str, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": port}


def egress_rules(spec: DigestPipelineSpec) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"ports": [_port(DNS_PORT, "UDP"), _port(DNS_PORT, "TCP")]},
        {"ports": [_port(AMQPS_PORT), _port(HTTPS_PORT)]},
    ]
    if spec.database.url_secret_ref is not None:
        rules.append({"ports": [_port(POSTGRES_PORT)]})
    rules.extend(rule.model_dump(mode="json", by_alias=True, exclude_none=True)
                 for rule in spec.network_policy.egress)
    return rules


def network_policy(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, names.network_policy, COMPONENT),
        "spec": {
            "podSelector": pod_selector(owner),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [_port(spec.worker.metrics_port)]}],
            "egress": egress_rules(spec),
        },
    }
