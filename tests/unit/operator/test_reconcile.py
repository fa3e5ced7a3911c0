"""The reconcile algorithm against an in-memory store of our own `Api` protocol (HTTP is covered in tests/e2e)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from digest_operator.cache import OWNED_SELECTOR, parse_selector, selector_matches
from digest_operator.conditions import find
from digest_operator.k8s import ApiError, response_error
from digest_operator.reconcile import reconcile
from tests.support.samples import DIGEST, minimal, with_path

NOW = "2026-01-01T00:00:00Z"
UID = "pipeline-uid"


class MemoryApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.fail_apply: dict[str, ApiError] = {}
        self.gets: list[str] = []

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.gets.append(plural)
        obj = self.objects.get((api_version, plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        if obj["kind"] in self.fail_apply:
            raise self.fail_apply[obj["kind"]]
        key = (obj["apiVersion"], plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        stored = copy.deepcopy(obj)
        stored["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        self.writes.append(("delete", plural, name))
        self.objects.pop((api_version, plural, namespace, name), None)

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> list[dict[str, Any]]:
        wanted = dict(pair.split("=", 1) for pair in label_selector.split(","))
        return [copy.deepcopy(obj) for (v, p, ns, _), obj in self.objects.items()
                if (v, p, ns) == (api_version, plural, namespace)
                and wanted.items() <= (obj["metadata"].get("labels") or {}).items()]


class LabelledCache:
    """What the watch cache holds: only the objects carrying the operator's labels (its server-side selector)."""

    def __init__(self, api: MemoryApi) -> None:
        self.api = api

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.api.objects.get((api_version, plural, namespace, name))
        labels = (obj or {}).get("metadata", {}).get("labels") or {}
        return copy.deepcopy(obj) if obj and selector_matches(parse_selector(OWNED_SELECTOR), labels) else None

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> list[dict[str, Any]]:
        return [obj for obj in await self.api.list(api_version, plural, namespace, label_selector)
                if selector_matches(parse_selector(OWNED_SELECTOR), obj["metadata"].get("labels") or {})]


def _body(**spec: Any) -> dict[str, Any]:
    body = minimal(**spec)
    body["metadata"].update(uid=UID, generation=1)
    return body


async def _converge(api: MemoryApi, body: dict[str, Any]) -> dict[str, Any]:
    outcome = await reconcile(body, api, NOW)
    return {**body, "status": outcome.status}


async def test_second_reconcile_writes_nothing() -> None:
    api = MemoryApi()
    body = await _converge(api, _body())
    assert len(api.writes) == 9
    api.writes.clear()
    outcome = await reconcile(body, api, NOW)
    assert api.writes == [] and outcome.status_patch == {} and outcome.events == []


async def test_drift_is_repaired_and_reported() -> None:
    api = MemoryApi()
    body = await _converge(api, _body())
    key = next(k for k in api.objects if k[1] == "deployments")
    api.objects[key]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    outcome = await reconcile(body, api, NOW)
    assert [(c.action, c.kind) for c in outcome.changes] == [("DriftRepaired", "Deployment")]
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "DriftRepaired")]
    assert api.objects[key]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)


async def test_spec_change_is_an_update_and_disabled_children_are_pruned() -> None:
    api = MemoryApi()
    body = await _converge(api, _body())
    body = with_path(body, "spec.monitoring", {"enabled": False})
    body = with_path(body, "spec.scaling", {"maxReplicas": 3})
    body["metadata"]["generation"] = 2
    api.writes.clear()
    outcome = await reconcile(body, api, NOW)
    actions = {(c.action, c.kind) for c in outcome.changes}
    assert actions == {("Updated", "ScaledObject"), ("Pruned", "PodMonitor"), ("Pruned", "PrometheusRule")}


async def test_foreign_child_is_never_touched() -> None:
    api = MemoryApi()
    api.objects[("apps/v1", "deployments", "default", "demo-worker")] = {
        "metadata": {"name": "demo-worker", "uid": "someone-else"}, "spec": {}}
    outcome = await reconcile(_body(), api, NOW)
    assert ("apply", "Deployment", "demo-worker") not in api.writes
    degraded = find(outcome.status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "ChildConflict"
    assert "demo-worker" in degraded["message"]


async def test_tag_only_image_keeps_running_the_live_digest() -> None:
    api = MemoryApi()
    body = await _converge(api, _body())
    body = with_path(body, "spec.image", "registry.example.com/team/digest-worker:latest")
    api.writes.clear()
    outcome = await reconcile(body, api, NOW)
    assert api.writes == []
    assert find(outcome.status["conditions"], "ImagePinned")["reason"] == "TagNotAllowed"  # type: ignore[index]
    assert outcome.status["image"]["ref"].endswith(DIGEST)


async def test_tag_only_image_on_a_new_pipeline_deploys_no_workload() -> None:
    api = MemoryApi()
    outcome = await reconcile(_body(image="registry.example.com/worker:1.0"), api, NOW)
    assert {kind for _, kind, _ in api.writes} == {"ServiceAccount", "ConfigMap", "TriggerAuthentication",
                                                   "PodMonitor", "PrometheusRule", "NetworkPolicy"}
    assert find(outcome.status["conditions"], "Ready")["reason"] == "ImageNotPinned"  # type: ignore[index]


async def test_invalid_spec_makes_no_api_call() -> None:
    api = MemoryApi()
    outcome = await reconcile(with_path(_body(), "spec.scaling.maxReplicas", 0), api, NOW)
    assert api.writes == [] and outcome.invalid is not None
    assert "spec.scaling.maxReplicas" in find(outcome.status["conditions"], "Ready")["message"]  # type: ignore[index]


# how kube-apiserver answers a request for a kind it does not serve (no CRD): plain text, not a Status object
NOT_SERVED = response_error(404, b"404 page not found\n")


async def test_missing_crd_is_reported_and_other_children_still_apply() -> None:
    api = MemoryApi()
    api.fail_apply["PodMonitor"] = NOT_SERVED
    outcome = await reconcile(_body(), api, NOW)
    assert outcome.failed
    ready = find(outcome.status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "ApplyFailed"
    assert ready["message"] == (
        "applying PodMonitor demo-worker failed: the API server does not serve monitoring.coreos.com/v1 PodMonitor: "
        "is the Prometheus Operator CRD podmonitors.monitoring.coreos.com installed? Otherwise set "
        "spec.monitoring.enabled: false")
    assert ("apply", "Deployment", "demo-worker") in api.writes


async def test_missing_keda_crds_name_the_kinds_and_the_crds() -> None:
    api = MemoryApi()
    api.fail_apply.update(TriggerAuthentication=NOT_SERVED, ScaledObject=NOT_SERVED)
    outcome = await reconcile(_body(), api, NOW)
    assert outcome.failed
    degraded = find(outcome.status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "ApplyFailed"
    assert degraded["message"] == (
        "applying TriggerAuthentication demo-servicebus failed: the API server does not serve keda.sh/v1alpha1 "
        "TriggerAuthentication: is the KEDA CRD triggerauthentications.keda.sh installed?; "
        "applying ScaledObject demo failed: the API server does not serve keda.sh/v1alpha1 ScaledObject: "
        "is the KEDA CRD scaledobjects.keda.sh installed?")
    assert [(e.type, e.message) for e in outcome.events if e.reason == "ApplyFailed"] == [
        ("Warning", degraded["message"])]
    assert ("apply", "Deployment", "demo-worker") in api.writes


async def test_a_404_status_object_is_not_taken_for_a_missing_crd() -> None:
    api = MemoryApi()
    api.fail_apply["ScaledObject"] = response_error(
        404, b'{"kind":"Status","reason":"NotFound","message":"namespaces \\"default\\" not found"}')
    outcome = await reconcile(_body(), api, NOW)
    ready = find(outcome.status["conditions"], "Ready")
    assert ready is not None and ready["message"] == (
        'applying ScaledObject demo failed: 404 NotFound: namespaces "default" not found')


async def test_transient_errors_propagate_for_retry() -> None:
    api = MemoryApi()
    api.fail_apply["Deployment"] = ApiError(503, "ServiceUnavailable", "try later")
    with pytest.raises(ApiError) as info:
        await reconcile(_body(), api, NOW)
    assert info.value.transient


async def test_removed_fields_trigger_an_apply_and_are_reported_as_an_update() -> None:
    api = MemoryApi()
    body = await _converge(api, _body(worker={"nodeSelector": {"pool": "digests"}}))
    body = with_path(body, "spec.worker", {})
    body["metadata"]["generation"] = 2
    outcome = await reconcile(body, api, NOW)
    assert ("Updated", "Deployment") in {(c.action, c.kind) for c in outcome.changes}
    assert ("Updated", "CronJob") in {(c.action, c.kind) for c in outcome.changes}
    key = next(k for k in api.objects if k[1] == "deployments")
    assert "nodeSelector" not in api.objects[key]["spec"]["template"]["spec"]


async def test_a_child_the_cache_lacks_is_read_from_the_api_once_so_an_unlabelled_namesake_is_not_taken_over() -> None:
    """The cache holds only objects with the operator's labels: before creating a child it does not hold, the
    reconcile reads it from the API (one GET per absent child), and a same-named object without those labels is a
    conflict, never applied over. Once the children are cached, a reconcile reads nothing from the API."""
    api = MemoryApi()
    api.objects[("apps/v1", "deployments", "default", "demo-worker")] = {
        "metadata": {"name": "demo-worker", "uid": "someone-else"}, "spec": {}}
    cache = LabelledCache(api)
    outcome = await reconcile(_body(), api, NOW, cache=cache)
    assert ("apply", "Deployment", "demo-worker") not in api.writes
    degraded = find(outcome.status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "ChildConflict"
    assert sorted(api.gets) == sorted(plural for (_, plural, _, _) in api.objects)  # each child once, none twice

    api.objects.pop(("apps/v1", "deployments", "default", "demo-worker"))
    body = {**_body(), "status": outcome.status}
    outcome = await reconcile(body, api, NOW, cache=cache)
    assert ("apply", "Deployment", "demo-worker") in api.writes
    api.gets.clear()
    api.writes.clear()
    await reconcile({**body, "status": outcome.status}, api, NOW, cache=cache)
    assert api.gets == [] and api.writes == []
