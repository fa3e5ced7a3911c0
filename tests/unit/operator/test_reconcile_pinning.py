"""Reconcile with Resolve/Track against the in-memory API and an in-memory resolver (our own Resolver protocol)."""

from __future__ import annotations

import copy
from typing import Any

from digest_api.imageref import ImageRef
from digest_operator.conditions import find
from digest_operator.pinning import RESOLVE_REQUESTED_AT, Backoff
from digest_operator.reconcile import reconcile
from digest_operator.registry import Credentials, RegistryError, Resolved
from tests.unit.operator.test_reconcile import UID, MemoryApi

TAG = "registry.example.com/team/worker:1.0"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
T0, T1 = "2026-11-28T12:00:00Z", "2026-11-28T12:00:01Z"


class Tags:
    def __init__(self, digest: str) -> None:
        self.digest: str | RegistryError = digest
        self.calls: list[tuple[str, Credentials | None]] = []

    async def resolve(self, image: ImageRef, credentials: Credentials | None = None) -> Resolved:
        self.calls.append((str(image), credentials))
        if isinstance(self.digest, RegistryError):
            raise self.digest
        return Resolved(self.digest, "application/vnd.oci.image.index.v1+json")


def _body(**spec: Any) -> dict[str, Any]:
    from tests.support.samples import minimal

    body = minimal(image=TAG, **{"imagePolicy": {"mode": "Resolve"}, **spec})
    body["metadata"].update(uid=UID, generation=1)
    return body


def _image(api: MemoryApi) -> str:
    (deployment,) = [o for (_, plural, _, _), o in api.objects.items() if plural == "deployments"]
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _pinned(status: dict[str, Any]) -> dict[str, Any]:
    cond = find(status["conditions"], "ImagePinned")
    assert cond is not None
    return cond


async def test_resolution_is_recorded_and_reused() -> None:
    api, tags = MemoryApi(), Tags(D1)
    body = _body()
    outcome = await reconcile(body, api, T0, tags)
    assert _image(api) == f"{TAG}@{D1}"
    assert outcome.status["image"]["resolved"] == f"{TAG}@{D1}"
    assert (_pinned(outcome.status)["reason"], [e.reason for e in outcome.events].count("TagResolved")) == (
        "TagResolved", 1)
    body["status"] = outcome.status
    api.writes.clear()
    again = await reconcile(body, api, T1, tags)
    assert (len(tags.calls), api.writes, again.status_patch) == (1, [], {})

    body["metadata"]["annotations"] = {RESOLVE_REQUESTED_AT: "now"}
    tags.digest = D2
    moved = await reconcile(body, api, T1, tags)
    assert len(tags.calls) == 2 and _image(api) == f"{TAG}@{D2}"
    assert moved.status["image"]["resolveRequestedAt"] == "now"


async def test_failures_keep_the_running_digest_and_back_off() -> None:
    api, tags = MemoryApi(), Tags(D1)
    body = _body()
    body["status"] = (await reconcile(body, api, T0, tags)).status
    body["metadata"]["generation"] = 2  # a spec change asks the registry again
    tags.digest = RegistryError("TagNotFound", f"{TAG}: no such tag")
    failed = await reconcile(body, api, T0, tags, Backoff(10, 60))
    assert _image(api) == f"{TAG}@{D1}"  # fail static
    pinned = _pinned(failed.status)
    assert (pinned["status"], pinned["reason"]) == ("False", "TagNotFound")
    assert f"still running {TAG}@{D1}" in pinned["message"]
    assert failed.retry_in == 10 and failed.status["image"]["resolveFailures"] == 1
    assert [e.reason for e in failed.events if e.type == "Warning"] == ["TagNotFound"]
    body["status"] = failed.status
    waiting = await reconcile(body, api, T1, tags, Backoff(10, 60))  # within the backoff: the registry rests
    assert len(tags.calls) == 2 and waiting.status_patch == {} and waiting.retry_in == 9


async def test_pull_secret_credentials_reach_the_resolver() -> None:
    import base64
    import json

    api, tags = MemoryApi(), Tags(D1)
    config = {"auths": {"registry.example.com": {"username": "robot", "password": "pw"}}}
    api.objects[("v1", "secrets", "default", "pull")] = {
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}
    await reconcile(_body(imagePullSecrets=[{"name": "missing"}, {"name": "pull"}]), api, T0, tags)
    assert tags.calls == [(TAG, Credentials("robot", "pw"))]


async def test_unreadable_pull_secrets_resolve_anonymously_and_say_why() -> None:
    from digest_operator.k8s import ApiError

    class NoSecrets(MemoryApi):
        async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
            if plural == "secrets":
                raise ApiError(403, "Forbidden", "secrets is forbidden")
            return await super().get(api_version, plural, namespace, name)

    tags = Tags(D1)
    tags.digest = RegistryError("Unauthorized", f"{TAG}: the registry refused access anonymously")
    outcome = await reconcile(_body(imagePullSecrets=[{"name": "pull"}]), NoSecrets(), T0, tags)
    assert tags.calls == [(TAG, None)]
    message = _pinned(outcome.status)["message"]
    assert "reading imagePullSecrets failed (403 Forbidden)" in message
    assert "bind the ClusterRole digest-operator-pull-secrets" in message


def _complete(api: MemoryApi) -> None:
    """Play the Deployment controller: the live worker Deployment finished its rollout with ready pods."""
    (deployment,) = [o for (_, plural, _, _), o in api.objects.items() if plural == "deployments"]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                            "availableReplicas": 1}


async def test_a_rollout_that_completed_just_before_the_tag_moved_is_recorded_complete() -> None:
    """The race: the Deployment completes, and the first reconcile to see it also resolves a moved tag.

    That reconcile replaces the template; the completion of the running revision must still reach the history,
    or automatic rollback finds no good digest and the history reads Superseded."""
    api, tags = MemoryApi(), Tags(D1)
    body = _body(imagePolicy={"mode": "Track", "trackInterval": "1s"}, rollout={"autoRollback": True})
    body["status"] = (await reconcile(body, api, T0, tags)).status
    assert body["status"]["rollout"]["phase"] == "Progressing"
    _complete(api)  # completes, but no reconcile ran in between ...
    tags.digest = D2  # ... and the tag moved: the next one (track interval elapsed) rolls out D2
    outcome = await reconcile(body, api, T1, tags)
    assert _image(api) == f"{TAG}@{D2}"
    history = [(h["revision"], h["digest"], h["result"]) for h in outcome.status["history"]]
    assert history == [(2, D2, "Progressing"), (1, D1, "Complete")]
    assert outcome.status["history"][1]["verified"] is True

    # D2 fails: the rollback finds D1
    body["status"] = outcome.status
    (deployment,) = [o for (_, plural, _, _), o in api.objects.items() if plural == "deployments"]
    deployment["status"] = {"observedGeneration": 0, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}]}
    rolled_back = await reconcile(body, api, T1, tags)
    assert _image(api) == f"{TAG}@{D1}"
    assert rolled_back.status["rollback"]["failedImage"] == f"{TAG}@{D2}"


class ServerApi(MemoryApi):
    """Applies like the API server: the status subresource survives, a changed spec gets a new generation."""

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        key = (obj["apiVersion"], plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        live = self.objects.get(key)
        await super().apply(obj, plural)
        stored = self.objects[key]
        generation = int((live or {}).get("metadata", {}).get("generation") or 0)
        stored["metadata"]["generation"] = generation + (live is None or live.get("spec") != stored.get("spec"))
        if live is not None and "status" in live:
            stored["status"] = live["status"]
        return copy.deepcopy(stored)


class CompletesWhileResolving(Tags):
    """The registry answers slowly: the Deployment controller reports the running rollout complete meanwhile."""

    def __init__(self, digest: str, api: MemoryApi) -> None:
        super().__init__(digest)
        self.api = api

    async def resolve(self, image: ImageRef, credentials: Credentials | None = None) -> Resolved:
        if self.calls:
            _complete(self.api)
        return await super().resolve(image, credentials)


async def test_a_rollout_that_completes_while_the_moved_tag_is_resolved_is_recorded_complete() -> None:
    """The same race, one step later: the reconcile read the Deployment still progressing, the rollout completed
    while the registry was asked, then the new digest replaced the template. The apply response still reports the
    old template's completion (observedGeneration predates the new template): it is recorded."""
    api = ServerApi()
    tags = CompletesWhileResolving(D1, api)
    body = _body(imagePolicy={"mode": "Track", "trackInterval": "1s"}, rollout={"autoRollback": True})
    body["status"] = (await reconcile(body, api, T0, tags)).status
    tags.digest = D2
    outcome = await reconcile(body, api, T1, tags)
    assert _image(api) == f"{TAG}@{D2}"
    history = [(h["revision"], h["digest"], h["result"], h.get("verified")) for h in outcome.status["history"]]
    assert history == [(2, D2, "Progressing", None), (1, D1, "Complete", True)]
    assert outcome.status["rollout"]["revision"] == 2


async def test_a_rollout_still_progressing_when_the_tag_moves_is_superseded() -> None:
    api, tags = MemoryApi(), Tags(D1)
    body = _body(imagePolicy={"mode": "Track", "trackInterval": "1s"})
    body["status"] = (await reconcile(body, api, T0, tags)).status
    tags.digest = D2
    outcome = await reconcile(body, api, T1, tags)
    history = [(h["revision"], h["digest"], h["result"]) for h in outcome.status["history"]]
    assert history == [(2, D2, "Progressing"), (1, D1, "Superseded")]
