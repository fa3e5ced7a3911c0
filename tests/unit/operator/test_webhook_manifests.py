"""overlays/webhook (manifests/ + the manifests/webhook component): renders, validates, least privilege, and the
operator's webhook settings agree with the Service and the certificate."""

from __future__ import annotations

from typing import Any

from digest_operator.config import OperatorConfig
from tests.support.schemas import assert_valid
from tests.unit.operator.test_manifests import _kustomize

CERT_MANAGER = "cert-manager.io/v1"


def _objects() -> list[dict[str, Any]]:
    return _kustomize("overlays/webhook")


def _one(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def test_overlay_renders_and_validates() -> None:
    for obj in _objects():
        if obj["apiVersion"] == CERT_MANAGER:  # no schema shipped for cert-manager; checked below
            assert obj["kind"] in {"Issuer", "Certificate"}
        elif obj["kind"] not in {"ClusterKopfPeering", "CustomResourceDefinition"}:
            assert_valid(obj)
        if obj["kind"] in {"Service", "Deployment", "Issuer", "Certificate", "ServiceAccount"}:
            assert obj["metadata"]["namespace"] == "digest-system", obj["kind"]


def test_webhook_rbac_is_create_and_named_patch_only() -> None:
    rules = _one("ClusterRole", "digest-operator-webhook")["rules"]
    assert {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in rules} == {
        (("get", "create", "patch"), ("digest.dev",))}
    for rule in rules:
        assert rule["apiGroups"] == ["admissionregistration.k8s.io"]
    binding = _one("ClusterRoleBinding", "digest-operator-webhook")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digest-operator", "namespace": "digest-system"}]
    pull = _one("ClusterRole", "digest-operator-pull-secrets")
    assert pull["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    bindings = [o for o in _objects() if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    assert all(b["roleRef"]["name"] != "digest-operator-pull-secrets" for b in bindings)  # opt-in per namespace


def test_operator_webhook_settings_match_service_and_certificate() -> None:
    deployment = _one("Deployment", "digest-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config = OperatorConfig.from_env({e["name"]: e["value"] for e in container["env"] if "value" in e})
    assert (config.webhook, config.webhook_failure_policy, config.webhook_port) == ("validate", "Fail", 9443)
    port = next(p for p in container["ports"] if p["name"] == "webhook")
    assert port["containerPort"] == config.webhook_port
    service = _one("Service", "digest-operator-webhook")
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    # the API server calls the webhook through a service reference on the Service's own port, not a .svc URL
    assert config.webhook_host is None
    assert config.webhook_service_ref == (service["metadata"]["namespace"], service["metadata"]["name"],
                                          service["spec"]["ports"][0]["port"])


def test_the_network_policy_opens_the_webhook_port_too() -> None:
    policy, deployment = _one("NetworkPolicy", "digest-operator"), _one("Deployment", "digest-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {("TCP", p["containerPort"]) for p in container["ports"]} == {("TCP", 8080), ("TCP", 9443)}
