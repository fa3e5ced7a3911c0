"""The real apiserver calls admission webhooks over TLS on `kubectl apply`: first a stand-in review function (the
plumbing: TLS with its own CA, caBundle, AdmissionReview v1, the message kubectl shows), then the operator's own
image-pinning webhook, served by Kopf and registered by the operator itself with the RBAC of manifests/webhook.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.controlplane.conftest import ROOT
from tests.support.admission import WebhookTLS, serve_webhook, validating_webhook
from tests.support.controlplane import ControlPlane
from tests.support.kubeconfig import free_port
from tests.support.operator_thread import FAST, OperatorThread
from tests.support.samples import minimal

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker

MESSAGE = "spec.image {image} is not pinned by digest; use <repo>:<tag>@sha256:<digest>"


def stand_in_review(request: dict[str, Any]) -> dict[str, Any]:
    image = request["object"]["spec"].get("image", "")
    if "@sha256:" in image:
        return {"allowed": True}
    return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": MESSAGE.format(image=image)}}


def test_apiserver_calls_webhook_over_tls(control_plane: ControlPlane, namespace: str, webhook_tls: WebhookTLS) -> None:
    tls = webhook_tls
    tag_only = minimal(namespace=namespace, image="registry.example.com/team/digest-worker:1.0")
    with serve_webhook(tls, stand_in_review) as (url, received), \
            validating_webhook(control_plane, "image-pinning-test", f"{url}/validate", tls.ca_pem,
                               namespace=namespace):
        deadline = time.monotonic() + 30
        while True:  # the apiserver's webhook informer picks the configuration up asynchronously
            result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(tag_only), check=False)
            if result.returncode != 0 or time.monotonic() > deadline:
                break
            control_plane.kubectl("delete", "dgp", "demo", "-n", namespace)
            time.sleep(0.2)
        assert result.returncode != 0, "the webhook was never called"
        expected = ('admission webhook "image-pinning-test.digest.dev" denied the request: spec.image '
                    'registry.example.com/team/digest-worker:1.0 is not pinned by digest')
        assert expected in result.stderr, result.stderr
        assert control_plane.get(f"/apis/digest.dev/v1alpha1/namespaces/{namespace}/digestpipelines/demo") is None
        pinned = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(minimal(namespace=namespace)))
        assert "created" in pinned.stdout
        operations = [(r["operation"], r["kind"]["kind"], r["namespace"]) for r in received]
        assert ("CREATE", "DigestPipeline", namespace) in operations
        assert all(r["userInfo"]["username"] == "digest-admin" for r in received)


CONFIGURATION = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/digest.dev"


@pytest.fixture
def webhook_operator(control_plane: ControlPlane, operator_rbac: str) -> Iterator[OperatorThread]:
    """The operator with its validating webhook on 127.0.0.1, as its service account with manifests/webhook's RBAC
    (the webhook configuration is persistent by design, so the test removes it afterwards)."""
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "webhook" / "rbac.yaml"))
    config = dataclasses.replace(FAST, webhook="validate", webhook_addr="127.0.0.1", webhook_port=free_port(),
                                 webhook_host="127.0.0.1")
    op = OperatorThread(control_plane.server, config=config, peering="digest-operator")
    op.runtime.credentials = lambda: control_plane.connection_info(operator_rbac)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        control_plane.kubectl("delete", "validatingwebhookconfiguration", "digest.dev", "--ignore-not-found")


def test_apiserver_calls_the_operators_own_webhook(control_plane: ControlPlane, namespace: str,
                                                     webhook_operator: OperatorThread) -> None:
    registered = control_plane.wait_for(
        CONFIGURATION, lambda o: bool(o and o["webhooks"] and o["webhooks"][0]["clientConfig"].get("caBundle")),
        what="the webhook configuration the operator registers")
    assert registered is not None
    (webhook,) = registered["webhooks"]
    assert webhook["clientConfig"]["url"].startswith("https://127.0.0.1:")
    assert webhook["failurePolicy"] == "Fail"
    image = "registry.example.com/team/digest-worker:1.0"
    tag_only = yaml.safe_dump(minimal(namespace=namespace, image=image))
    deadline = time.monotonic() + 30
    while True:  # the apiserver's webhook informer picks the configuration up asynchronously
        result = control_plane.kubectl("apply", "-f", "-", input=tag_only, check=False)
        if result.returncode != 0 or time.monotonic() > deadline:
            break
        control_plane.kubectl("delete", "dgp", "demo", "-n", namespace, "--wait=false")
        time.sleep(0.2)
    assert result.returncode != 0, "the webhook was never called"
    assert (f'admission webhook "{webhook["name"]}" denied the request: spec.image {image} is not pinned by '
            f"digest and spec.imagePolicy.mode is Require. Pin it as registry.example.com/team/digest-worker:1.0"
            f"@sha256:<digest>") in result.stderr, result.stderr
    pinned = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(minimal(namespace=namespace)))
    assert "created" in pinned.stdout
    resolve = minimal(namespace=namespace, image=image, imagePolicy={"mode": "Resolve"})
    resolve["metadata"]["name"] = "resolving"
    admitted = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(resolve))
    assert "created" in admitted.stdout  # a tag the operator resolves itself is admitted (with a warning)
    webhook_operator.check()
