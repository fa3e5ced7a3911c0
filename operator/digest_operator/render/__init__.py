"""Pure renderers: a validated pipeline in, the Kubernetes objects the operator applies out.

No client, no clock, no environment: the same input always renders the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from digest_api.imageref import ImageRef
from digest_api.parse import Pipeline
from digest_operator.render import dlq_monitor, monitoring, network, scaling, workload
from digest_operator.render.meta import Owner, prune_empty, stamp_applied_hash
from digest_operator.render.names import ChildNames

Object = dict[str, Any]


@dataclass(frozen=True)
class ChildRef:
    """Identity of a child the operator may own."""

    api_version: str
    kind: str
    plural: str
    name: str


def possible_children(name: str) -> list[ChildRef]:
    """Every child a pipeline can have, whether or not its current spec renders it (for pruning)."""
    names = ChildNames.of(name)
    return [
        ChildRef("v1", "ServiceAccount", "serviceaccounts", names.service_account),
        ChildRef("apps/v1", "Deployment", "deployments", names.deployment),
        ChildRef(scaling.KEDA_API, "TriggerAuthentication", "triggerauthentications", names.trigger_auth),
        ChildRef(scaling.KEDA_API, "ScaledObject", "scaledobjects", names.scaled_object),
        ChildRef("v1", "ConfigMap", "configmaps", names.monitor_config),
        ChildRef("batch/v1", "CronJob", "cronjobs", names.monitor_cronjob),
        ChildRef(monitoring.MONITORING_API, "PodMonitor", "podmonitors", names.pod_monitor),
        ChildRef(monitoring.MONITORING_API, "PrometheusRule", "prometheusrules", names.prometheus_rule),
        ChildRef(network.API_VERSION, "NetworkPolicy", "networkpolicies", names.network_policy),
    ]


def render_children(pipeline: Pipeline, image: ImageRef | None) -> list[Object]:
    """The desired children, in apply order. Without a pinned `image` no workload is rendered."""
    spec = pipeline.spec
    owner = Owner(pipeline.name, pipeline.namespace, pipeline.uid)
    names = ChildNames.of(pipeline.name)
    objects: list[Object] = []
    if spec.network_policy.enabled:
        objects.append(network.network_policy(owner, spec, names))  # before the pods it isolates
    if spec.worker.service_account_name is None:
        objects.append(workload.service_account(owner, spec, names))
    objects.append(dlq_monitor.config_map(owner, spec, names))
    objects.append(scaling.trigger_authentication(owner, spec, names))
    if image is not None and image.pinned:
        objects.append(workload.deployment(owner, spec, names, image))
        objects.append(scaling.scaled_object(owner, spec, names))
        objects.append(dlq_monitor.cronjob(owner, spec, names, image))
    if spec.monitoring.enabled:
        objects.append(monitoring.pod_monitor(owner, spec, names))
        objects.append(monitoring.prometheus_rule(owner, spec, names))
    return [stamp_applied_hash(prune_empty(obj)) for obj in objects]
