"""Issue 7, point 8: the real apiserver calls an admission webhook over TLS on `kubectl apply`.

The operator's own image-pinning webhook is being built elsewhere; until it lands, this test drives the hook with a
stand-in review function (deny a DigestPipeline whose image is not pinned by digest), so the plumbing (TLS with its
own CA, caBundle, AdmissionReview v1, the message shown by kubectl) is proven and ready for the real webhook:
serve it with `WebhookTLS` and register it with `validating_webhook(...)`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from tests.support.admission import WebhookTLS, serve_webhook, validating_webhook
from tests.support.controlplane import ControlPlane
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
