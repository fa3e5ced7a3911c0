"""Issue 7, points 4-7: the real Kopf operator, authenticated as its service account with exactly the RBAC of
`manifests/`, against a real kube-apiserver and kube-controller-manager.

No test plays a controller here: the Deployment controller creates ReplicaSets and reports rollouts, the garbage
collector deletes children. KEDA is played only where noted (a field manager that sets `spec.replicas`).
"""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from digest_api.parse import parse_pipeline
from digest_operator.k8s import resource_path
from digest_operator.render import ChildRef, possible_children, render_children
from tests.controlplane.conftest import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, PEERING, ROOT
from tests.support.controlplane import ControlPlane
from tests.support.operator_thread import OperatorThread
from tests.support.samples import minimal

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
APPLY = "application/apply-patch+yaml"


def dgp(namespace: str, name: str = "demo") -> str:
    return f"/apis/digest.dev/v1alpha1/namespaces/{namespace}/digestpipelines/{name}"


def child_paths(namespace: str, name: str = "demo") -> dict[str, str]:
    return {ref.kind: path(ref, namespace) for ref in possible_children(name)}


def path(ref: ChildRef, namespace: str) -> str:
    return resource_path(ref.api_version, ref.plural, namespace, ref.name)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def operator_requests(plane: ControlPlane, start: int, namespace: str | None = None) -> list[dict[str, Any]]:
    entries, _ = plane.audit_entries(start)
    return [e for e in entries if e["user"]["username"] == OPERATOR_USER
            and (namespace is None or e.get("objectRef", {}).get("namespace") == namespace)]


def describe(entry: dict[str, Any]) -> str:
    ref = entry.get("objectRef", {})
    return (f"{entry['verb']} {ref.get('apiGroup', '')}/{ref.get('resource', '')}"
            f"{'/' + ref['subresource'] if ref.get('subresource') else ''} {ref.get('name', '')} "
            f"-> {entry.get('responseStatus', {}).get('code')}")


def play_keda(plane: ControlPlane, namespace: str, replicas: int) -> None:
    """Set the worker's replicas as KEDA's HPA would: its own field manager, only `spec.replicas`."""
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "demo-worker", "namespace": namespace}, "spec": {"replicas": replicas}}
    code, answer = plane.request("PATCH", child_paths(namespace)["Deployment"], body, content_type=APPLY,
                                 params="fieldManager=keda-hpa")
    assert code == 200, answer


@pytest.fixture(scope="module")
def audit_start(control_plane: ControlPlane) -> int:
    """The audit log offset before this module's operator started."""
    return control_plane.audit_entries(0)[1]


@pytest.fixture(scope="module")
def running(audit_start: int, operator: OperatorThread, control_plane: ControlPlane) -> Iterator[OperatorThread]:
    yield operator
    operator.check()
    # a missing permission shows up as an authorization denial for the operator's account (other 403s, such as
    # writing an Event into a namespace being deleted at teardown, are admission answers, not RBAC)
    denied = [describe(e) for e in operator_requests(control_plane, audit_start)
              if (e.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"]
    assert not denied, f"the operator was denied (RBAC in manifests/ insufficient): {denied}"


def create_pipeline(plane: ControlPlane, namespace: str, **spec: Any) -> dict[str, Any]:
    code, created = plane.request("POST", f"/apis/digest.dev/v1alpha1/namespaces/{namespace}/digestpipelines",
                                  minimal(namespace=namespace, **spec))
    assert code == 201, created
    return created


def wait_ready(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    obj = plane.wait_for(dgp(namespace), lambda o: condition(o, "Ready").get("status") == "True", within=60,
                         what="pipeline Ready=True")
    assert obj is not None
    return obj


def test_operator_reconciles_sample_with_manifest_rbac(
        control_plane: ControlPlane, running: OperatorThread, namespace: str, audit_start: int) -> None:
    created = create_pipeline(control_plane, namespace)
    uid = created["metadata"]["uid"]
    paths = child_paths(namespace)
    control_plane.wait_for(paths["Deployment"], lambda o: o is not None, within=60, what="worker Deployment")
    for kind, child_path in paths.items():
        child = control_plane.wait_for(child_path, lambda o: o is not None, what=kind)
        assert child is not None
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (uid, True, True), kind
    play_keda(control_plane, namespace, 0)  # no nodes here: KEDA's scale to zero lets the rollout complete
    pipeline = wait_ready(control_plane, namespace)
    status = pipeline["status"]
    assert status["observedGeneration"] == pipeline["metadata"]["generation"]
    assert condition(pipeline, "ImagePinned")["status"] == "True"
    assert condition(pipeline, "Progressing")["reason"] == "RolloutComplete"
    assert condition(pipeline, "Degraded")["status"] == "False"
    assert status["replicas"] == 0

    def described() -> str:
        return control_plane.kubectl("describe", "dgp", "demo", "-n", namespace).stdout

    deadline = time.monotonic() + 30
    while "Ready" not in _event_reasons(described()) and time.monotonic() < deadline:
        time.sleep(0.2)
    text = described()
    for type_ in ("Ready", "ImagePinned", "Progressing", "Degraded"):
        assert re.search(rf"Type:\s+{type_}\n", text), text
    reasons = _event_reasons(text)
    assert {"Created", "Ready"} <= reasons, text
    assert "Deployment/demo-worker" in text
    # every request the operator made was answered as intended: reads of absent children 404, optimistic
    # concurrency may answer 409 (retried); nothing was forbidden or refused as invalid
    requests = operator_requests(control_plane, audit_start, namespace)
    refused = [describe(e) for e in requests if e["responseStatus"]["code"] >= 400
               and (e["verb"], e["responseStatus"]["code"]) != ("get", 404) and e["responseStatus"]["code"] != 409]
    assert requests and not refused, refused


def _event_reasons(describe_text: str) -> set[str]:
    """Reasons in the Events table of `kubectl describe`."""
    _, _, events = describe_text.partition("\nEvents:")
    return {line.split()[1] for line in events.splitlines()[3:] if len(line.split()) > 1}


def managed(obj: dict[str, Any], manager: str) -> list[dict[str, Any]]:
    return [m for m in obj["metadata"].get("managedFields") or [] if m["manager"] == manager]


def test_server_side_apply_ownership(control_plane: ControlPlane, running: OperatorThread, namespace: str) -> None:
    create_pipeline(control_plane, namespace)
    paths = child_paths(namespace)
    control_plane.wait_for(paths["Deployment"], lambda o: o is not None, within=60, what="worker Deployment")
    # another manager (KEDA) owns spec.replicas; a third adds an annotation: the operator owns neither
    play_keda(control_plane, namespace, 0)
    code, answer = control_plane.request(
        "PATCH", paths["Deployment"], {"metadata": {"annotations": {"example.com/note": "kept"}}},
        content_type="application/merge-patch+json", params="fieldManager=someone-else")
    assert code == 200, answer
    wait_ready(control_plane, namespace)
    # a spec change makes the operator re-apply the Deployment: the other managers' fields survive
    code, answer = control_plane.request("PATCH", dgp(namespace), {"spec": {"worker": {"concurrency": 7}}},
                                         content_type="application/merge-patch+json")
    assert code == 200, answer
    deployment = control_plane.wait_for(paths["Deployment"], lambda o: o is not None and {
        "name": "DIGEST_CONCURRENCY", "value": "7"} in o["spec"]["template"]["spec"]["containers"][0]["env"],
        what="re-rendered worker env")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["example.com/note"] == "kept"
    (keda,) = managed(deployment, "keda-hpa")
    assert keda["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    (ours,) = managed(deployment, "digest-operator")
    assert ours["operation"] == "Apply"
    assert "f:replicas" not in ours["fieldsV1"]["f:spec"]

    # drift in an owned field (another manager forces the image) is repaired
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    drift: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "demo-worker"},
             "spec": {"template": {"spec": {"containers": [{"name": "worker", "image": "evil.example/x:latest"}]}}}}
    container_name = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    drift["spec"]["template"]["spec"]["containers"][0]["name"] = container_name
    code, answer = control_plane.request("PATCH", paths["Deployment"], drift, content_type=APPLY,
                                         params="fieldManager=intruder&force=true")
    assert code == 200, answer
    assert answer["spec"]["template"]["spec"]["containers"][0]["image"] == "evil.example/x:latest"
    repaired = control_plane.wait_for(
        paths["Deployment"], lambda o: o is not None and o["spec"]["template"]["spec"]["containers"][0]["image"]
        == image, what="drift repaired")
    assert repaired is not None
    # the operator took the image back (force): the intruder keeps only the list key it shares
    intruder = json.dumps([m["fieldsV1"] for m in managed(repaired, "intruder")])
    assert "f:image" not in intruder, intruder
    assert "f:image" in json.dumps(managed(repaired, "digest-operator")[0]["fieldsV1"])

    # the operator's field manager owns exactly what it renders: applying the current rendering with a probe
    # manager (dry run, no force: the rendering is in the server's canonical form, so nothing conflicts) gives the
    # probe the very same field set
    pipeline = parse_pipeline(control_plane.get(dgp(namespace)) or {})
    plurals = {ref.kind: ref.plural for ref in possible_children("demo")}
    for child in render_children(pipeline, pipeline.image):
        child_path = resource_path(child["apiVersion"], plurals[child["kind"]], namespace, child["metadata"]["name"])
        live = control_plane.wait_for(child_path, lambda o: o is not None)
        assert live is not None
        (owner,) = managed(live, "digest-operator")
        code, probe = control_plane.request("PATCH", child_path, child, content_type=APPLY,
                                            params="fieldManager=probe&dryRun=All")
        assert code == 200, (child["kind"], probe.get("message"))
        (probed,) = managed(probe, "probe")
        assert owner["fieldsV1"] == probed["fieldsV1"], (child["kind"], json.dumps(owner["fieldsV1"]),
                                                         json.dumps(probed["fieldsV1"]))


def test_garbage_collection_and_rollout_status(
        control_plane: ControlPlane, running: OperatorThread, namespace: str) -> None:
    create_pipeline(control_plane, namespace)
    paths = child_paths(namespace)
    deployment = control_plane.wait_for(paths["Deployment"], lambda o: o is not None, within=60)
    assert deployment is not None
    # the real Deployment controller creates a ReplicaSet (and the ReplicaSet controller a Pod, which stays
    # Pending: there are no nodes), and the pipeline's status follows the Deployment's
    replica_sets = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
    listing = control_plane.wait_for(replica_sets, lambda o: bool(o and o["items"]), what="a ReplicaSet")
    assert listing is not None
    (replica_set,) = listing["items"]
    assert replica_set["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    pipeline = control_plane.wait_for(dgp(namespace), lambda o: (o or {}).get("status", {}).get("replicas") == 1,
                                      within=60, what="status.replicas from the Deployment")
    assert pipeline is not None
    assert pipeline["status"]["readyReplicas"] == 0
    assert condition(pipeline, "Ready")["reason"] == "RolloutInProgress"
    assert condition(pipeline, "Progressing")["status"] == "True"
    pods = control_plane.wait_for(f"/api/v1/namespaces/{namespace}/pods", lambda o: bool(o and o["items"]),
                                  what="a worker Pod")
    assert pods is not None
    # KEDA scales to zero: the rollout completes, the pod goes, the pipeline becomes Ready
    play_keda(control_plane, namespace, 0)
    wait_ready(control_plane, namespace)

    control_plane.kubectl("delete", "dgp", "demo", "-n", namespace, "--wait=true", "--timeout=60s")
    for kind, child_path in [*paths.items(), ("ReplicaSet", f"{replica_sets}/{replica_set['metadata']['name']}")]:
        control_plane.wait_for(child_path, lambda o: o is None, within=60, what=f"{kind} garbage-collected")


def test_steady_state_makes_no_request(control_plane: ControlPlane, running: OperatorThread, namespace: str) -> None:
    """Once converged, the resync timer's reconciles (every 0.5 s) compare every child from the watch caches and
    the pipeline from the version the operator holds: no request at all, of any verb, in the pipeline's namespace
    (the audit log; cluster-wide watches are resumed from time to time whatever the reconciles do)."""
    created = create_pipeline(control_plane, namespace)
    uid = created["metadata"]["uid"]
    control_plane.wait_for(child_paths(namespace)["Deployment"], lambda o: o is not None, within=60)
    play_keda(control_plane, namespace, 0)
    wait_ready(control_plane, namespace)
    deadline = time.monotonic() + 60

    def reconciles(n: int) -> None:
        """Until `n` more reconciles of this pipeline ran to the end."""
        count = running.runtime.reconciles_of(uid)
        while running.runtime.reconciles_of(uid) < count + n:
            assert time.monotonic() < deadline, "the resync timer did not reconcile this pipeline"
            time.sleep(0.05)

    # settled: the pipeline (status included) unchanged across three resyncs (a retried 409 may still write once)
    while True:
        version = (control_plane.get(dgp(namespace)) or {})["metadata"]["resourceVersion"]
        reconciles(3)
        if (control_plane.get(dgp(namespace)) or {})["metadata"]["resourceVersion"] == version:
            break
    _, start = control_plane.audit_entries(0)
    reconciles(6)
    time.sleep(0.5)  # the audit entry of a last request may land just after its answer
    requests = operator_requests(control_plane, start, namespace)
    by_verb = collections.Counter(e["verb"] for e in requests)
    assert by_verb == {}, yaml.safe_dump([describe(e) for e in requests])
    cache = running.runtime.cache
    for ref in possible_children("demo"):  # what those reconciles compared, as the caches hold it
        informer = cache.informer(ref.api_version, ref.plural, namespace)
        assert informer is not None and informer.store.get(namespace, ref.name) is not None, ref.kind


def test_prune_deletes_what_is_no_longer_rendered(
        control_plane: ControlPlane, running: OperatorThread, namespace: str) -> None:
    create_pipeline(control_plane, namespace)
    paths = child_paths(namespace)
    for kind in ("PodMonitor", "PrometheusRule", "ServiceAccount", "NetworkPolicy"):
        control_plane.wait_for(paths[kind], lambda o: o is not None, within=60, what=kind)
    code, answer = control_plane.request("PATCH", dgp(namespace), {"spec": {
        "monitoring": {"enabled": False}, "worker": {"serviceAccountName": "shared-worker"},
        "networkPolicy": {"enabled": False}}},
        content_type="application/merge-patch+json")
    assert code == 200, answer
    for kind in ("PodMonitor", "PrometheusRule", "ServiceAccount"):
        control_plane.wait_for(paths[kind], lambda o: o is None, what=f"{kind} pruned")
    deployment = control_plane.get(paths["Deployment"])
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "shared-worker"


def test_operator_creates_its_peering_object(
        control_plane: ControlPlane, running: OperatorThread, audit_start: int) -> None:
    """manifests/ ships no ClusterKopfPeering (kubectl would refuse it together with its CRD on a fresh cluster):
    the operator, as its service account, created it at start-up with a server-side apply, and announces itself."""
    path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{PEERING}"
    peering = control_plane.wait_for(path, lambda o: bool((o or {}).get("status")), what="the operator's keep-alive")
    assert peering is not None
    created = [(describe(e), e["requestURI"].partition("?")[2]) for e in operator_requests(control_plane, audit_start)
               if e.get("objectRef", {}).get("resource") == "clusterkopfpeerings" and e["verb"] == "patch"
               and e["responseStatus"]["code"] == 201]
    assert created == [(f"patch kopf.dev/clusterkopfpeerings {PEERING} -> 201",
                        "fieldManager=digest-operator&force=true")]


def granted_rules() -> set[tuple[str, str, str]]:
    role = yaml.safe_load((ROOT / "manifests" / "rbac" / "role.yaml").read_text())
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


# Granted but not exercised by this module, and why the operator still needs them.
NOT_EXERCISED = {
    ("digest.dev", "digestpipelines/finalizers", "update"):
        "OwnerReferencesPermissionEnforcement (OpenShift, hardened clusters): setting blockOwnerDeletion on the "
        "children's ownerReferences needs update on the owner's finalizers",
    ("apps", "deployments", "delete"): "prune of the worker when the spec stops rendering it",
    ("batch", "cronjobs", "delete"): "prune of the DLQ monitor when the spec stops rendering it",
    ("keda.sh", "scaledobjects", "delete"): "prune of the ScaledObject when the spec stops rendering it",
    ("keda.sh", "triggerauthentications", "delete"): "prune when the spec stops rendering it",
    ("", "configmaps", "delete"): "prune when the spec stops rendering it",
}


def used_rules(plane: ControlPlane, start: int, namespace: str) -> dict[tuple[str, str, str], str]:
    """(apiGroup, resource[/subresource], verb) of the operator's calls since `start`: cluster-scoped and
    cluster-wide ones (watches, the peering) and those in `namespace`; each with one call that used it."""
    used: dict[tuple[str, str, str], str] = {}
    for entry in operator_requests(plane, start):
        ref = entry.get("objectRef") or {}
        if not ref.get("resource") or ref.get("namespace") not in (None, namespace):
            continue  # discovery (/api, /apis, /version) is allowed to every authenticated user; other tests' calls
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.setdefault((ref.get("apiGroup", ""), resource, entry["verb"]), describe(entry))
        if entry["verb"] == "patch" and entry["responseStatus"]["code"] == 201:
            # a server-side apply that creates the object is authorized for create too (not a separate entry)
            used.setdefault((ref.get("apiGroup", ""), resource, "create"), describe(entry))
    return used


def test_rbac_is_least_privilege(
        control_plane: ControlPlane, running: OperatorThread, audit_start: int, namespace: str) -> None:
    """Every rule of manifests/rbac/role.yaml is either used by a call seen in the audit log or listed in
    NOT_EXERCISED with the call that needs it; the module's fixture fails on any denial (RBAC sufficient).

    The test drives the calls itself, in its own namespace: a pipeline whose children are all created (apply,
    status, Events, the DLQ monitor's pod list), then pruned. Only the operator's cluster-wide calls since it
    started (watches, the peering) and the calls in this namespace count, so the other tests of the module add
    nothing: the verdict is the same alone and in the module."""
    create_pipeline(control_plane, namespace)
    paths = child_paths(namespace)
    for kind, child_path in paths.items():
        control_plane.wait_for(child_path, lambda o: o is not None, within=60, what=kind)
    control_plane.wait_for(f"/api/v1/namespaces/{namespace}/events", lambda o: any(
        e.get("reason") == "Created" and e["involvedObject"].get("name") == "demo" for e in (o or {}).get(
            "items", [])), what="the operator's Created Event")
    code, answer = control_plane.request("PATCH", dgp(namespace), {"spec": {
        "monitoring": {"enabled": False}, "worker": {"serviceAccountName": "shared-worker"},
        "networkPolicy": {"enabled": False}}},
        content_type="application/merge-patch+json")
    assert code == 200, answer
    for kind in ("PodMonitor", "PrometheusRule", "ServiceAccount", "NetworkPolicy"):
        control_plane.wait_for(paths[kind], lambda o: o is None, what=f"{kind} pruned")
    granted = granted_rules()
    deadline = time.monotonic() + 10  # the audit entry of the last call may land just after its answer
    while granted - set(used := used_rules(control_plane, audit_start, namespace)) != set(NOT_EXERCISED):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(used) <= granted, sorted(set(used) - granted)
    unused = granted - set(used)
    assert unused == set(NOT_EXERCISED), (sorted(unused - set(NOT_EXERCISED)),
                                          sorted(set(NOT_EXERCISED) - unused))
