"""Pieces shared by the worker and monitor pods: hardening, Service Bus credentials, scheduling."""

from __future__ import annotations

from typing import Any

from digest_api import contract
from digest_api.spec import DigestPipelineSpec, SecretKeyRef
from digest_operator.render.names import ChildNames

RUN_AS_ID = 10001
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"


def service_account_name(spec: DigestPipelineSpec, names: ChildNames) -> str:
    """The user's ServiceAccount when `worker.serviceAccountName` is set, else the one the operator renders."""
    return spec.worker.service_account_name or names.service_account


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def value(name: str, text: str | int) -> dict[str, Any]:
    return {"name": name, "value": str(text)}


def from_secret(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def uses_workload_identity(spec: DigestPipelineSpec) -> bool:
    return spec.service_bus.auth.workload_identity is not None or spec.teams.app_type == "UserAssignedMSI"


def pod_labels(spec: DigestPipelineSpec) -> dict[str, str]:
    return {WORKLOAD_IDENTITY_LABEL: "true"} if uses_workload_identity(spec) else {}


def service_bus_env(pipeline: str, spec: DigestPipelineSpec) -> list[dict[str, Any]]:
    """Identity of the pipeline and the queue, with its credentials."""
    auth = spec.service_bus.auth
    env = [
        value(contract.PIPELINE, pipeline),
        # apiVersion as the server defaults it: fieldRef is atomic, so a shorter form would make every other
        # applier of the same object conflict with us over it
        {"name": contract.POD_NAME, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        value(contract.SERVICEBUS_NAMESPACE, spec.service_bus.namespace),
        value(contract.SERVICEBUS_QUEUE, spec.service_bus.queue),
        value(contract.MAX_DELIVERY_COUNT, spec.service_bus.max_delivery_count),
    ]
    if auth.connection_string_secret_ref is not None:
        env.append(from_secret(contract.SERVICEBUS_CONNECTION_STRING, auth.connection_string_secret_ref))
    return env


def scheduling(spec: DigestPipelineSpec, service_account: str) -> dict[str, Any]:
    """Pod-spec fields common to worker and monitor pods."""
    pod: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        # no {SERVICE}_PORT/_SERVICE_HOST variables: a Service named digest-… in the namespace would otherwise
        # inject DIGEST_…_PORT into the worker's own settings
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    if spec.worker.node_selector:
        pod["nodeSelector"] = dict(sorted(spec.worker.node_selector.items()))
    if spec.worker.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.worker.tolerations]
    return pod


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """A writable /tmp on a read-only root filesystem: (volume, mount)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, {"name": "tmp", "mountPath": "/tmp"}
