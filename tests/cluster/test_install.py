"""The documented install on a real cluster: one `kubectl apply --server-side -k manifests/` with the operator
pinned by digest; the operator pods run the image built from Dockerfile.operator under exactly the shipped RBAC."""

from __future__ import annotations

import time

from digest_cluster import install
from digest_cluster.cluster import Cluster
from tests.cluster.conftest import Images, install_keda_crds
from tests.cluster.helpers import http_get, metric, pipeline, pods, ready

OPERATOR_SELECTOR = "app.kubernetes.io/name=digest-operator"
KEDA_CRDS = ("scaledobjects.keda.sh", "triggerauthentications.keda.sh", "scaledjobs.keda.sh",
             "clustertriggerauthentications.keda.sh")


def test_one_apply_installs_the_operator_and_two_replicas_peer(cluster: Cluster, project_images: Images,
                                                                operator_installed: str, namespace: str) -> None:
    # the fixture's single apply succeeded (kubectl exits non-zero otherwise); it created the CRDs and the operator
    assert "customresourcedefinition.apiextensions.k8s.io/digestpipelines.digest.dev serverside-applied" in (
        operator_installed)
    running = pods(cluster, install.OPERATOR_NAMESPACE, OPERATOR_SELECTOR)
    assert len(running) == 2 and all(ready(p) for p in running), running
    for pod in running:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "digest-operator"
        container = spec["containers"][0]
        assert container["image"] == project_images.operator  # by digest, as built here
        status = pod["status"]["containerStatuses"][0]
        assert status["imageID"].endswith(project_images.operator.split("@", 1)[1])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # the probes the kubelet runs answer from the host too, and the metrics are the operator's
        base = f"http://{pod['status']['podIP']}:8080"
        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/readyz")[0] == 200
        assert "digest_operator_reconciles" in http_get(f"{base}/metrics")[1]

    # peering: with a pipeline to reconcile, exactly one replica acts and the other pauses in its favour
    install.apply_objects(cluster, [pipeline("peering-probe", namespace, project_images.worker, **local_spec())])
    deadline = time.monotonic() + 90
    while True:
        counts = {p["metadata"]["name"]: metric(http_get(f"http://{p['status']['podIP']}:8080/metrics")[1],
                                                "digest_operator_reconciles_total") for p in running}
        if sorted(c > 0 for c in counts.values()) == [False, True]:
            break
        assert time.monotonic() < deadline, f"reconciles per operator pod: {counts}"
        time.sleep(1)
    # the one acting is the live peer with the highest priority in the peering object both replicas announce in
    peers = (install.get(cluster, "clusterkopfpeering", "digest-operator") or {}).get("status", {})
    by_pod = {identity.split("@", 1)[1].split("/", 1)[0]: info["priority"] for identity, info in peers.items()}
    assert set(by_pod) == set(counts), peers
    acting = next(name for name, count in counts.items() if count > 0)
    assert by_pod[acting] == max(by_pod.values()), (counts, peers)


def test_missing_keda_crds_become_apply_failed_and_the_pipeline_recovers_once_installed(
        cluster: Cluster, project_images: Images, operator_installed: str, namespace: str) -> None:
    cluster.kubectl("delete", "crd", "--ignore-not-found", *KEDA_CRDS)
    install.apply_objects(cluster, [pipeline("no-keda", namespace, project_images.worker, **local_spec())])
    failed = install.wait_for(
        cluster, ("dgp", "no-keda", "-n", namespace),
        lambda o: (c := install.condition(o, "Ready")) is not None and c.get("reason") == "ApplyFailed", 90,
        "Ready=False/ApplyFailed")
    message = install.condition(failed, "Ready")["message"]  # type: ignore[index]
    assert "keda.sh" in message, message
    # level-triggered: installing the CRDs is enough, the next reconcile converges
    install_keda_crds(cluster)
    install.wait_for(cluster, ("scaledobject", "no-keda", "-n", namespace), lambda o: o is not None, 120,
                     "the ScaledObject after the KEDA CRDs were installed")


def local_spec() -> dict[str, object]:
    return {
        "serviceBus": {"namespace": "sb.digest.invalid", "queue": "q",
                       "auth": {"connectionStringSecretRef": {"name": "servicebus", "key": "connectionString"}}},
        "teams": {"appId": "00000000-0000-0000-0000-000000000001", "appType": "MultiTenant",
                  "passwordSecretRef": {"name": "teams-bot", "key": "password"}},
        "monitoring": {"enabled": False},
    }
