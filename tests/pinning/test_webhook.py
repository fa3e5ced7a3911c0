"""The admission webhook over HTTPS, as the API server calls it: Kopf's webhook server in the real operator,
its ValidatingWebhookConfiguration (written by the operator into the emulated API) giving the URL and CA bundle.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from digest_cluster import pki
from digest_operator.config import OperatorConfig
from tests.support.kubeapi import KubeApi
from tests.support.operator_thread import FAST, OperatorThread
from tests.support.registry import Registry, free_port
from tests.support.samples import minimal

pytestmark = pytest.mark.e2e

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
TAG_ONLY = "registry.example.com/team/digest-worker:1.0"


def webhook_config(**changes: Any) -> OperatorConfig:
    settings: dict[str, Any] = {"webhook": "validate", "webhook_addr": "127.0.0.1", "webhook_port": free_port(),
                                "webhook_host": "127.0.0.1", **changes}
    return dataclasses.replace(FAST, **settings)


@pytest.fixture
async def start(kube_api: KubeApi) -> AsyncIterator[Callable[[OperatorConfig], Any]]:
    started: list[OperatorThread] = []

    async def run(config: OperatorConfig) -> OperatorThread:
        op = await asyncio.to_thread(OperatorThread(kube_api.url, config=config).start)
        started.append(op)
        return op

    yield run
    for op in started:
        await asyncio.to_thread(op.stop)


async def configuration(kube_api: KubeApi, kind: str = "validatingwebhookconfigurations") -> dict[str, Any]:
    """The webhook configuration the operator manages, once it carries the server's client config."""
    obj = await kube_api.wait_for(f"{ADMISSION}/{kind}/digest.dev", lambda o: bool(
        o and o.get("webhooks") and o["webhooks"][0].get("clientConfig", {}).get("caBundle")), within=30)
    assert obj is not None
    return obj


async def review(webhook: dict[str, Any], obj: dict[str, Any], operation: str = "CREATE",
                 old: dict[str, Any] | None = None, client_cert: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """POST an AdmissionReview to the webhook like the API server does: TLS verified with the caBundle, and the
    API server's client certificate if it has one (`client_cert`: certificate and key files)."""
    client_config = webhook["clientConfig"]
    context = ssl.create_default_context(cadata=base64.b64decode(client_config["caBundle"]).decode())
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    uid = str(uuid.uuid4())
    request: dict[str, Any] = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": operation, "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "kind": {"group": "digest.dev", "version": "v1alpha1", "kind": "DigestPipeline"},
            "resource": {"group": "digest.dev", "version": "v1alpha1", "resource": "digestpipelines"},
            "userInfo": {"username": "alice"}, "object": obj, "oldObject": old, "dryRun": False,
        },
    }
    async with aiohttp.ClientSession() as session, session.post(client_config["url"], json=request,
                                                                ssl=context) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
    assert answer["response"]["uid"] == uid
    return dict(answer["response"])


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(base64.b64decode(answer["patch"]))) if answer.get("patch") else []


async def test_validating_webhook_denies_tags_and_admits_digests(kube_api: KubeApi, start: Any) -> None:
    await start(webhook_config())
    config = await configuration(kube_api)
    (webhook,) = config["webhooks"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["clientConfig"]["url"].startswith("https://127.0.0.1:")
    rule = webhook["rules"][0]
    assert (rule["apiGroups"], rule["resources"], sorted(rule["operations"])) == (
        ["digest.dev"], ["digestpipelines"], ["CREATE", "UPDATE"])

    denied = await review(webhook, minimal(image=TAG_ONLY))
    assert denied["allowed"] is False
    assert denied["status"]["code"] == 400
    message = denied["status"]["message"]
    assert f"spec.image {TAG_ONLY} is not pinned by digest" in message
    assert f"Pin it as {TAG_ONLY}@sha256:<digest>" in message and "imagePolicy.mode: Resolve" in message

    assert (await review(webhook, minimal()))["allowed"] is True  # pinned by digest
    resolved = await review(webhook, minimal(image=TAG_ONLY, imagePolicy={"mode": "Resolve"}))
    assert resolved["allowed"] is True
    assert resolved["warnings"] == [f"spec.image {TAG_ONLY} is a tag: the operator resolves it to a digest "
                                    f"(imagePolicy Resolve); see status.image.resolved"]
    # updates: a new tag is denied; an update that keeps a stored tag (metadata, finalizers, scaling) goes through,
    # so a pipeline stored before the webhook existed can still be changed and deleted
    update = await review(webhook, minimal(image=TAG_ONLY), operation="UPDATE", old=minimal())
    assert update["allowed"] is False and "is not pinned by digest" in update["status"]["message"]
    stored = minimal(image=TAG_ONLY)
    finalizing = minimal(image=TAG_ONLY)
    finalizing["metadata"]["finalizers"] = ["digest.dev/finalizer"]
    assert (await review(webhook, finalizing, operation="UPDATE", old=stored))["allowed"] is True
    into_require = await review(webhook, minimal(image=TAG_ONLY), operation="UPDATE",
                                old=minimal(image=TAG_ONLY, imagePolicy={"mode": "Resolve"}))
    assert into_require["allowed"] is False


async def test_with_a_client_ca_only_its_client_certificates_get_an_answer(
        kube_api: KubeApi, start: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """DIGEST_OPERATOR_WEBHOOK_CLIENT_CA_FILE: a caller without a client certificate from that CA (anyone in the
    cluster who can reach the port) fails the TLS handshake and never reaches the handler; the API server, with
    one, gets its review answered."""
    apiserver = pki.issue(tmp_path / "ca", pki.Leaf("apiserver", "kube-apiserver-webhook-client", client=True),
                          tmp_path / "certs")
    stranger = pki.issue(tmp_path / "other-ca", pki.Leaf("stranger", "kube-apiserver-webhook-client", client=True),
                         tmp_path / "certs")
    await start(webhook_config(webhook_client_ca_file=str(tmp_path / "ca" / "ca.crt")))
    (webhook,) = (await configuration(kube_api))["webhooks"]
    denied = await review(webhook, minimal(image=TAG_ONLY), client_cert=apiserver)
    assert denied["allowed"] is False and "is not pinned by digest" in denied["status"]["message"]
    for cert in (None, stranger):
        with pytest.raises(aiohttp.ClientError):  # TLS 1.3: the server drops the connection after the handshake
            await review(webhook, minimal(image=TAG_ONLY), client_cert=cert)
    handled = [r for r in caplog.records if r.getMessage().startswith("Webhook 'image-pinned' failed")]
    assert len(handled) == 1  # only the API server's review reached the handler


async def test_failure_policy_comes_from_operator_config(kube_api: KubeApi, start: Any) -> None:
    await start(webhook_config(webhook_failure_policy="Ignore"))
    config = await configuration(kube_api)
    assert config["webhooks"][0]["failurePolicy"] == "Ignore"


async def test_a_stopping_replica_leaves_the_webhook_registered(kube_api: KubeApi, start: Any) -> None:
    """Rolling update: the old replica stops while the new one serves; the configuration must keep the webhook."""
    old = await start(webhook_config())
    await configuration(kube_api)
    await asyncio.to_thread(old.stop)
    kept = await kube_api.get(f"{ADMISSION}/validatingwebhookconfigurations/digest.dev")
    assert kept is not None and [w["name"] for w in kept["webhooks"]] == ["image-pinned.digest.dev"]


async def test_mutating_mode_pins_the_tag_at_admission(kube_api: KubeApi, start: Any, registry: Registry) -> None:
    digest = await registry.push_image("team/worker", "1.0")
    await start(webhook_config(webhook="mutate", insecure_registries=(registry.host,), registry_timeout=2))
    mutating = (await configuration(kube_api, "mutatingwebhookconfigurations"))["webhooks"][0]
    validating = (await configuration(kube_api))["webhooks"][0]
    assert mutating["failurePolicy"] == "Ignore"  # fail open: the validating webhook still guards
    tag = f"{registry.host}/team/worker:1.0"

    answer = await review(mutating, minimal(image=tag))
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    assert {"op": "replace", "path": "/spec/image", "value": f"{tag}@{digest}"} in patch_of(answer)
    # already pinned, or resolved by the operator: left alone
    for body in (minimal(), minimal(image=tag, imagePolicy={"mode": "Resolve"})):
        assert not patch_of(await review(mutating, body))
    # an update that keeps a stored tag (e.g. the operator adding its finalizer) does not rewrite the spec
    assert not patch_of(await review(mutating, minimal(image=tag), operation="UPDATE", old=minimal(image=tag)))
    # registry down: no mutation, and the validating webhook denies the tag
    registry.stop_process()
    answer = await review(mutating, minimal(image=tag))
    assert answer["allowed"] is True
    assert not patch_of(answer)
    assert (await review(validating, minimal(image=tag)))["allowed"] is False


async def test_digest_in_samples_is_admitted(kube_api: KubeApi, start: Any) -> None:
    from tests.support.samples import load, sample_files

    await start(webhook_config())
    webhook = (await configuration(kube_api))["webhooks"][0]
    for path in sample_files():
        body = load(path.name)
        body["metadata"].setdefault("namespace", "default")
        assert (await review(webhook, body))["allowed"] is True, path.name
