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


# Secrets reach the pods as files (a projected volume), not as environment variables, which child processes inherit
# and /proc/<pid>/environ shows: the pod gets `<NAME>_FILE` naming the file (digest_api.contract.secret).
SECRETS_VOLUME = "secrets"
SECRETS_DIR = "/var/run/secrets/digest-pipelines"
SECRET_FILES = {  # contract variable → file name in SECRETS_DIR
    contract.SERVICEBUS_CONNECTION_STRING: "servicebus-connection-string",
    contract.TEAMS_APP_PASSWORD: "teams-app-password",
    contract.DATABASE_URL: "database-url",
}


def secrets(spec: DigestPipelineSpec, *, worker: bool) -> dict[str, SecretKeyRef]:
    """The secrets a pod needs, by contract variable: the Service Bus connection string (worker and monitor), the
    Teams password and the database URL (the worker only)."""
    refs = {contract.SERVICEBUS_CONNECTION_STRING: spec.service_bus.auth.connection_string_secret_ref}
    if worker:
        refs |= {contract.TEAMS_APP_PASSWORD: spec.teams.password_secret_ref,
                 contract.DATABASE_URL: spec.database.url_secret_ref}
    return {name: ref for name, ref in refs.items() if ref is not None}


def secret_files(refs: dict[str, SecretKeyRef]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """(env, volumes, mounts) that hand `refs` to the container as read-only files; all empty without secrets."""
    if not refs:
        return [], [], []
    env = [value(name + contract.FILE_SUFFIX, f"{SECRETS_DIR}/{SECRET_FILES[name]}") for name in refs]
    sources = [{"secret": {"name": ref.name, "items": [{"key": ref.key, "path": SECRET_FILES[name]}]}}
               for name, ref in refs.items()]
    # 0440 + the pod's fsGroup: readable by the worker's group only
    volume = {"name": SECRETS_VOLUME, "projected": {"defaultMode": 0o440, "sources": sources}}
    mount = {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR, "readOnly": True}
    return env, [volume], [mount]


def uses_workload_identity(spec: DigestPipelineSpec) -> bool:
    return spec.service_bus.auth.workload_identity is not None or spec.teams.app_type == "UserAssignedMSI"


def pod_labels(spec: DigestPipelineSpec) -> dict[str, str]:
    return {WORKLOAD_IDENTITY_LABEL: "true"} if uses_workload_identity(spec) else {}


def service_bus_env(pipeline: str, spec: DigestPipelineSpec) -> list[dict[str, Any]]:
    """Identity of the pipeline and the queue (its credentials: `secret_files`)."""
    return [
        value(contract.PIPELINE, pipeline),
        # apiVersion as the server defaults it: fieldRef is atomic, so a shorter form would make every other
        # applier of the same object conflict with us over it
        {"name": contract.POD_NAME, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        value(contract.SERVICEBUS_NAMESPACE, spec.service_bus.namespace),
        value(contract.SERVICEBUS_QUEUE, spec.service_bus.queue),
        value(contract.MAX_DELIVERY_COUNT, spec.service_bus.max_delivery_count),
    ]


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


NO_CPU_LIMIT = ("CKV_K8S_11", "no CPU limit by choice: CFS throttling stalls lock renewal and settlement; "
                               "CPU requests size the pods, spec.worker.resources.limits may add one")


def scanner_skips(*skips: tuple[str, str]) -> dict[str, str]:
    """Annotations that tell checkov (`checkov.io/skipN: ID=reason`) which of its checks a choice overrides."""
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(skips, start=1)}


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """A writable /tmp on a read-only root filesystem: (volume, mount)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, {"name": "tmp", "mountPath": "/tmp"}
