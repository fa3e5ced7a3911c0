"""The worker's ServiceAccount and Deployment."""

from __future__ import annotations

from typing import Any

from digest_api import contract
from digest_api.imageref import ImageRef
from digest_api.spec import DigestPipelineSpec
from digest_operator.render import pod
from digest_operator.render.meta import Owner, metadata, selector_labels
from digest_operator.render.names import ChildNames

COMPONENT = "worker"
CONTAINER = "worker"


def service_account(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    identity = spec.service_bus.auth.workload_identity
    if identity is not None:
        annotations["azure.workload.identity/client-id"] = identity.client_id
        if identity.tenant_id:
            annotations["azure.workload.identity/tenant-id"] = identity.tenant_id
    elif spec.teams.app_type == "UserAssignedMSI":
        annotations["azure.workload.identity/client-id"] = spec.teams.app_id
        if spec.teams.tenant_id:
            annotations["azure.workload.identity/tenant-id"] = spec.teams.tenant_id
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(owner, names.service_account, COMPONENT, annotations=annotations),
        "automountServiceAccountToken": False,
    }


def worker_env(owner: Owner, spec: DigestPipelineSpec) -> list[dict[str, Any]]:
    worker, teams = spec.worker, spec.teams
    env = pod.service_bus_env(owner.name, spec)
    env += [
        pod.value(contract.CONCURRENCY, worker.concurrency),
        pod.value(contract.PREFETCH, worker.prefetch),
        pod.value(contract.MAX_LOCK_RENEWAL_SECONDS, worker.max_lock_renewal_seconds),
        pod.value(contract.DRAIN_SECONDS,
                  max(1, worker.termination_grace_period_seconds - contract.DRAIN_MARGIN_SECONDS)),
        pod.value(contract.METRICS_PORT, worker.metrics_port),
        pod.value(contract.TEAMS_APP_ID, teams.app_id),
        pod.value(contract.TEAMS_APP_TYPE, teams.app_type),
    ]
    if teams.tenant_id:
        env.append(pod.value(contract.TEAMS_TENANT_ID, teams.tenant_id))
    if teams.login_url:
        env.append(pod.value(contract.TEAMS_LOGIN_URL, teams.login_url))
    if teams.oauth_scope:
        env.append(pod.value(contract.TEAMS_OAUTH_SCOPE, teams.oauth_scope))
    if teams.service_urls:
        env.append(pod.value(contract.TEAMS_SERVICE_URLS, ",".join(teams.service_urls)))
    env += pod.secret_files(pod.secrets(spec, worker=True))[0]
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in worker.env]
    return env


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "metrics"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def deployment(owner: Owner, spec: DigestPipelineSpec, names: ChildNames, image: ImageRef) -> dict[str, Any]:
    """The worker Deployment. No `replicas`: KEDA's HPA owns it."""
    worker, rollout = spec.worker, spec.rollout
    volume, mount = pod.tmp_volume()
    _, secret_volumes, secret_mounts = pod.secret_files(pod.secrets(spec, worker=True))
    container = {
        "name": CONTAINER,
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "args": ["worker"],
        "env": worker_env(owner, spec),
        "ports": [{"name": "metrics", "containerPort": worker.metrics_port, "protocol": "TCP"}],
        "startupProbe": _probe("/healthz", period=5, failures=24),
        "livenessProbe": _probe("/healthz", period=20, failures=3),
        "readinessProbe": _probe("/readyz", period=10, failures=3),
        "resources": worker.resources.model_dump(by_alias=True),
        "securityContext": pod.container_security_context(),
        "volumeMounts": [mount, *secret_mounts],
    }
    selector = selector_labels(owner, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, names.deployment, COMPONENT, annotations=pod.scanner_skips(
            *([] if "cpu" in worker.resources.limits else [pod.NO_CPU_LIMIT]))),
        "spec": {
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": rollout.progress_deadline_seconds,
            "revisionHistoryLimit": 10,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
            },
            "template": {
                "metadata": {
                    "labels": {**selector, **pod.pod_labels(spec)},
                    "annotations": {"kubectl.kubernetes.io/default-container": CONTAINER},
                },
                "spec": {
                    **pod.scheduling(spec, pod.service_account_name(spec, names)),
                    "terminationGracePeriodSeconds": worker.termination_grace_period_seconds,
                    "containers": [container],
                    "volumes": [volume, *secret_volumes],
                },
            },
        },
    }
