"""The webhook overlay on a real cluster: `kubectl apply --server-side -k overlays/webhook/` (the operator keeps its
own CA in a Secret), the API server calling the webhook through its Service, tag-only images denied at
`kubectl apply`, finalizers removed with the webhook installed, and what happens while every operator pod is down
(docs/pinning.md#admission-webhook)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from digest_cluster import install
from digest_cluster.cluster import Cluster
from tests.cluster.conftest import ROOT, Images
from tests.cluster.helpers import as_json, pipeline, pods, ready
from tests.cluster.test_install import OPERATOR_SELECTOR, local_spec

DENIED = 'admission webhook "image-pinned.digest.dev" denied the request'
CONFIGURATIONS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


@pytest.fixture
def webhook_installed(cluster: Cluster, project_images: Images, operator_installed: str,
                      keda_crds: None) -> Iterator[dict[str, object]]:
    """The webhook overlay applied over the plain install, as a user turns the webhook on; afterwards the plain
    install again and the leftover configurations deleted (the documented uninstall), so later tests are unaffected.
    Yields the live ValidatingWebhookConfiguration once the operator has registered it."""
    install.install_operator(cluster, ROOT / "overlays" / "webhook", project_images.operator)
    live = install.wait_for(
        cluster, ("validatingwebhookconfiguration", "digest.dev"),
        lambda o: o is not None and bool(o["webhooks"][0]["clientConfig"].get("caBundle")), 90,
        "the operator to register its ValidatingWebhookConfiguration")
    try:
        yield live
    finally:
        cluster.kubectl("scale", "-n", install.OPERATOR_NAMESPACE, "deployment/digest-operator", "--replicas=2")
        install.install_operator(cluster, ROOT / "manifests", project_images.operator)
        cluster.kubectl("delete", "--ignore-not-found", *[f"{kind}/digest.dev" for kind in CONFIGURATIONS])


def _apply(cluster: Cluster, obj: dict[str, object]) -> tuple[int, str]:
    result = cluster.kubectl("apply", "--server-side", "--field-manager=digest-cluster", "-f", "-",
                             input=as_json(obj), check=False, timeout=60)
    return result.returncode, result.stdout + result.stderr


def _denied_once_serving(cluster: Cluster, obj: dict[str, object], within: float = 60) -> str:
    """kubectl's output for `obj` once the webhook answers (right after a rollout the Service may still route to
    a pod that is going away: those attempts fail with a different message)."""
    deadline = time.monotonic() + within
    while True:
        code, output = _apply(cluster, obj)
        if code != 0 and DENIED in output:
            return output
        assert code != 0, f"a tag-only image was admitted: {output}"
        assert time.monotonic() < deadline, f"the webhook never answered: {output}"
        time.sleep(1)


def test_tag_only_image_is_denied_at_apply_and_finalizers_come_off_with_the_webhook_installed(
        cluster: Cluster, project_images: Images, webhook_installed: dict[str, object], namespace: str) -> None:
    webhook = webhook_installed["webhooks"][0]  # type: ignore[index]
    # the API server calls the Service on its port (not a .svc URL), and trusts the operator's own CA
    assert webhook["clientConfig"]["service"] == {"namespace": "digest-system", "name": "digest-operator-webhook",
                                                  "port": 443, "path": "/image-pinned"}, webhook
    ca = x509.load_pem_x509_certificate(base64.b64decode(webhook["clientConfig"]["caBundle"]))
    secret = install.get(cluster, "secret", "-n", install.OPERATOR_NAMESPACE, "digest-operator-webhook-certs")
    assert secret is not None and base64.b64decode(secret["data"]["ca.crt"]) == ca.public_bytes(Encoding.PEM)
    assert webhook["failurePolicy"] == "Fail"

    tagged = project_images.worker.split("@", 1)[0] + ":1.4.2"
    output = _denied_once_serving(cluster, pipeline("tagged", namespace, tagged, **local_spec()))
    assert "is not pinned by digest and spec.imagePolicy.mode is Require" in output, output
    assert f"Pin it as {tagged}@sha256:<digest>" in output, output
    assert install.get(cluster, "dgp", "tagged", "-n", namespace) is None  # nothing was stored

    # a pinned image is admitted; the operator adds its finalizer (a metadata-only update)
    code, output = _apply(cluster, pipeline("pinned", namespace, project_images.worker, **local_spec()))
    assert code == 0, output
    stored = install.wait_for(cluster, ("dgp", "pinned", "-n", namespace),
                              lambda o: bool((o or {}).get("metadata", {}).get("finalizers")), 90,
                              "the operator's finalizer on the pinned pipeline")
    # changing the spec to a tag is denied too (an UPDATE); the stored image stays
    code, output = _apply(cluster, pipeline("pinned", namespace, tagged, **local_spec()))
    assert code != 0 and DENIED in output, output
    assert install.get(cluster, "dgp", "pinned", "-n", namespace)["spec"]["image"] == (  # type: ignore[index]
        stored["spec"]["image"])

    # deleting with the webhook installed: the operator's cleanup and its finalizer removal go through
    cluster.kubectl("delete", "dgp", "pinned", "-n", namespace, "--timeout=90s", timeout=100)
    assert install.get(cluster, "dgp", "pinned", "-n", namespace) is None
    install.wait_for(cluster, ("deployment", "pinned", "-n", namespace), lambda o: o is None, 90,
                     "garbage collection of the worker Deployment")


def test_with_every_operator_pod_down_spec_writes_fail_closed_and_deletion_still_works(
        cluster: Cluster, project_images: Images, webhook_installed: dict[str, object], namespace: str) -> None:
    code, output = _apply(cluster, pipeline("kept", namespace, project_images.worker, **local_spec()))
    assert code == 0, output
    install.wait_for(cluster, ("dgp", "kept", "-n", namespace),
                     lambda o: bool((o or {}).get("metadata", {}).get("finalizers")), 90, "the operator's finalizer")

    cluster.kubectl("scale", "-n", install.OPERATOR_NAMESPACE, "deployment/digest-operator", "--replicas=0")
    install.wait_for(cluster, ("pods", "-n", install.OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR),
                     lambda o: not (o or {}).get("items"), 90, "every operator pod gone")

    # failurePolicy Fail: creating a pipeline (even a pinned one) is refused, naming the webhook that failed
    code, output = _apply(cluster, pipeline("while-down", namespace, project_images.worker, **local_spec()))
    assert code != 0 and 'failed calling webhook "image-pinned.digest.dev"' in output, output
    assert install.get(cluster, "dgp", "while-down", "-n", namespace) is None
    # metadata-only updates never reach the webhook (matchConditions): labels, and removing a finalizer by hand
    cluster.kubectl("label", "dgp", "kept", "-n", namespace, "team=digest")
    cluster.kubectl("delete", "dgp", "kept", "-n", namespace, "--wait=false")
    being_deleted = install.get(cluster, "dgp", "kept", "-n", namespace)
    assert being_deleted is not None and being_deleted["metadata"].get("deletionTimestamp"), being_deleted
    cluster.kubectl("patch", "dgp", "kept", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    install.wait_for(cluster, ("dgp", "kept", "-n", namespace), lambda o: o is None, 30, "the pipeline gone")

    # back up: writes are admitted again once a replica serves
    cluster.kubectl("scale", "-n", install.OPERATOR_NAMESPACE, "deployment/digest-operator", "--replicas=2")
    cluster.kubectl("rollout", "status", "-n", install.OPERATOR_NAMESPACE, "deployment/digest-operator",
                    "--timeout=120s", timeout=130)
    assert all(ready(p) for p in pods(cluster, install.OPERATOR_NAMESPACE, OPERATOR_SELECTOR))
    deadline = time.monotonic() + 60
    while (result := _apply(cluster, pipeline("after", namespace, project_images.worker, **local_spec())))[0] != 0:
        assert time.monotonic() < deadline, result[1]
        time.sleep(1)

