"""KEDA ScaledObject and TriggerAuthentication for the azure-servicebus scaler."""

from __future__ import annotations

from typing import Any

from digest_api.spec import DigestPipelineSpec
from digest_operator.render.meta import Owner, metadata
from digest_operator.render.names import ChildNames

COMPONENT = "autoscaling"
KEDA_API = "keda.sh/v1alpha1"

# Endpoint suffix → KEDA `cloud` value; any other suffix is a private cloud with an explicit endpointSuffix.
_CLOUDS = {
    "servicebus.windows.net": "AzurePublicCloud",
    "servicebus.chinacloudapi.cn": "AzureChinaCloud",
    "servicebus.usgovcloudapi.net": "AzureUSGovernmentCloud",
}


def namespace_metadata(fqdn: str) -> dict[str, str]:
    """KEDA wants the namespace's short name plus its cloud (or endpoint suffix), not the FQDN."""
    short, _, suffix = fqdn.partition(".")
    cloud = _CLOUDS.get(suffix.lower())
    if cloud is not None:
        return {"namespace": short, "cloud": cloud}
    return {"namespace": short, "cloud": "Private", "endpointSuffix": suffix}


def trigger_authentication(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    auth = spec.service_bus.auth
    body: dict[str, Any]
    if auth.workload_identity is not None:
        pod_identity = {"provider": "azure-workload", "identityId": auth.workload_identity.client_id}
        if auth.workload_identity.tenant_id:
            pod_identity["identityTenantId"] = auth.workload_identity.tenant_id
        body = {"podIdentity": pod_identity}
    else:
        assert auth.connection_string_secret_ref is not None  # guaranteed by ServiceBusAuth
        ref = auth.connection_string_secret_ref
        body = {"secretTargetRef": [{"parameter": "connection", "name": ref.name, "key": ref.key}]}
    return {
        "apiVersion": KEDA_API,
        "kind": "TriggerAuthentication",
        "metadata": metadata(owner, names.trigger_auth, COMPONENT),
        "spec": body,
    }


def scaled_object(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    scaling = spec.scaling
    trigger_metadata = {
        "queueName": spec.service_bus.queue,
        **namespace_metadata(spec.service_bus.namespace),
        "messageCount": str(scaling.messages_per_replica),
        "activationMessageCount": str(scaling.activation_messages),
    }
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": metadata(owner, names.scaled_object, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment},
            "pollingInterval": scaling.polling_interval,
            "cooldownPeriod": scaling.cooldown_period,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "triggers": [{
                "type": "azure-servicebus",
                "name": "queue-depth",
                "metadata": trigger_metadata,
                "authenticationRef": {"name": names.trigger_auth, "kind": "TriggerAuthentication"},
            }],
        },
    }
