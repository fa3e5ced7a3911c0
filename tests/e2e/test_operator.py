"""End to end: the real Kopf loop with our handlers, in its own thread, against the emulated API over HTTP.

Assertions read state through the API (GET), as they would against a real cluster. The test plays the Deployment
controller where a rollout must complete (the emulated API has no controllers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

import pytest

from tests.support.kubeapi import KubeApi, run_kube_api
from tests.support.operator_thread import FAST, OperatorThread
from tests.support.samples import DIGEST, minimal

pytestmark = pytest.mark.e2e

NS = "default"
DGP = f"/apis/digest.dev/v1alpha1/namespaces/{NS}/digestpipelines"
PATHS = {
    "ServiceAccount": f"/api/v1/namespaces/{NS}/serviceaccounts/demo-worker",
    "ConfigMap": f"/api/v1/namespaces/{NS}/configmaps/demo-dlq-monitor",
    "TriggerAuthentication": f"/apis/keda.sh/v1alpha1/namespaces/{NS}/triggerauthentications/demo-servicebus",
    "Deployment": f"/apis/apps/v1/namespaces/{NS}/deployments/demo-worker",
    "ScaledObject": f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/demo",
    "CronJob": f"/apis/batch/v1/namespaces/{NS}/cronjobs/demo-dlq-monitor",
    "PodMonitor": f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/podmonitors/demo-worker",
    "PrometheusRule": f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/prometheusrules/demo-dead-letter",
    "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/demo-worker",
}
WORKLOAD = ("Deployment", "ScaledObject", "CronJob")  # rendered only for a pinned image (render_children)
STEADY_WINDOW = 2.5  # seconds of observation; the timer runs every 0.5 s
WINDOW_RECONCILES = 3  # reconciles a window must see at least (about five fit in it)


@pytest.fixture
async def operator(kube_api: KubeApi, operators: list[OperatorThread]) -> OperatorThread:
    op = await asyncio.to_thread(OperatorThread(kube_api.url).start)
    operators.append(op)
    return op


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def ready(obj: dict[str, Any] | None) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def events(kube_api: KubeApi, name: str = "demo") -> list[tuple[str, str, str]]:
    listing = await kube_api.get(f"/api/v1/namespaces/{NS}/events") or {}
    return [(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in listing.get("items", [])
            if e.get("involvedObject", {}).get("name") == name]


async def wait_for_event(kube_api: KubeApi, type_: str, reason: str, within: float = 30.0) -> str:
    """The message of the first `type_`/`reason` Event of the pipeline; Kopf posts Events asynchronously."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        for t, r, message in await events(kube_api):
            if (t, r) == (type_, reason):
                return message
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {type_} {reason} Event in {await events(kube_api)}")
        await asyncio.sleep(0.05)


async def wait_for_reconciles(op: OperatorThread, count: int, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while op.runtime.reconcile_count < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {op.runtime.reconcile_count} reconciles"
        await asyncio.sleep(0.05)


def reconciles_with(op: OperatorThread, result: str) -> float:
    """Reconciles that ran to the end with this result (ok, invalid, error)."""
    value = op.runtime.metrics.registry.get_sample_value("digest_operator_reconciles_total", {"result": result})
    return value or 0.0


OPERATOR_AGENTS = ("kopf/", "digest-operator")


def operator_requests(kube_api: KubeApi, since: int = 0) -> list[tuple[str, str, str]]:
    """(method, path, query) of the requests the operator (Kopf and our client) made since a request-log mark."""
    return [(r.method.value, r.url.path, r.url.query_string) for r in kube_api.emulator.request_log[since:]
            if r.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS)]


def request_kind(method: str, path: str, query: str) -> str:
    """watch, list, discovery, or the method: what a restart may make (watch, list, discovery) and what not."""
    if method == "GET" and "watch=true" in query:
        return "watch"
    parts = path.strip("/").split("/")
    if method == "GET" and (parts[0] in ("api", "apis", "version") and len(parts) <= (2 if parts[0] == "api" else 3)
                            and "namespaces" not in parts):
        return "discovery"
    if method == "GET" and len(parts) % 2 == (0 if parts[0] == "apis" else 1):
        return "list"  # /api/v1[/namespaces/x]/plural, /apis/g/v[/namespaces/x]/plural
    return method


def cached(op: OperatorThread, path: str) -> dict[str, Any] | None:
    """The object at `path` as the operator's watch cache holds it."""
    parts = path.strip("/").split("/")
    api_version = parts[1] if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
    namespace, plural, name = parts[-3], parts[-2], parts[-1]
    informer = op.runtime.cache.informer(api_version, plural, namespace)
    assert informer is not None and informer.state == "ready", (path, informer)
    return informer.store.get(namespace, name)


async def observe_window(kube_api: KubeApi, op: OperatorThread, *, since: int | None = None,
                         reconciles: int = WINDOW_RECONCILES, result: str = "ok", observed: tuple[str, ...] = (),
                         name: str = "demo") -> list[tuple[str, str, str]]:
    """The operator's requests (watches apart: a watch the server ends is resumed, whatever the reconciles do) in a
    window of STEADY_WINDOW seconds (from `since`, a request-log mark, else now), after showing that the operator
    was active in it: at least `reconciles` reconciles ran to the end with `result`, and its watch cache held each
    of the `observed` paths (the children those reconciles compared with their rendering). "Nothing was asked"
    then means the reconciles looked and found nothing to do; without this a dead, stuck or idle operator would
    pass."""
    mark = kube_api.mark() if since is None else since
    runs, finished = op.runtime.reconcile_count, reconciles_with(op, result)
    await asyncio.sleep(STEADY_WINDOW)
    await wait_for_reconciles(op, runs + reconciles)
    deadline = asyncio.get_running_loop().time() + 30
    while reconciles_with(op, result) < finished + reconciles:  # counted just after the reconcile returns
        assert asyncio.get_running_loop().time() < deadline, (
            f"{reconciles_with(op, result) - finished} of {op.runtime.reconcile_count - runs} reconciles in the "
            f"window ended {result}")
        await asyncio.sleep(0.05)
    op.check()
    for path in observed:
        assert cached(op, path) is not None, path
    return [r for r in operator_requests(kube_api, mark) if request_kind(*r) != "watch"]


def api_errors(op: OperatorThread, status: int) -> float:
    """Errors with this HTTP status that the operator's own client received."""
    value = op.runtime.metrics.registry.get_sample_value("digest_operator_api_errors_total", {"code": str(status)})
    return value or 0.0


async def wait_until_quiet(kube_api: KubeApi, op: OperatorThread, within: float = 30.0) -> None:
    """Until two whole reconciles pass with no write at all (ours, or Kopf's own annotation and finalizer
    patches, which land asynchronously after convergence)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        mark, runs = kube_api.mark(), op.runtime.reconcile_count
        await wait_for_reconciles(op, runs + 2, within=within)
        if not kube_api.writes(mark):
            return
        assert asyncio.get_running_loop().time() < deadline, f"still writing: {kube_api.writes(mark)}"


async def complete_rollout(kube_api: KubeApi, replicas: int = 0) -> None:
    """Play KEDA (scale to `replicas`) and the Deployment controller (report the generation as rolled out)."""
    await kube_api.patch(PATHS["Deployment"], {"spec": {"replicas": replicas}})
    deployment = await kube_api.get(PATHS["Deployment"])
    assert deployment is not None
    await kube_api.patch(PATHS["Deployment"] + "/status", {"status": {
        "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
    }})


async def create_ready_pipeline(kube_api: KubeApi, **spec: Any) -> dict[str, Any]:
    await kube_api.create(DGP, minimal(**spec))
    await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None, within=30)
    await complete_rollout(kube_api)
    obj = await kube_api.wait_for(f"{DGP}/demo", ready, within=30)
    assert obj is not None
    return obj


async def test_create_renders_every_child_status_and_event(kube_api: KubeApi, operator: OperatorThread) -> None:
    await kube_api.create(DGP, minimal())
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: bool(condition(o, "Ready")), within=30)
    assert pipeline is not None
    uid = pipeline["metadata"]["uid"]
    for kind, path in PATHS.items():
        child = await kube_api.get(path)
        assert child is not None, kind
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"], owner["kind"]) == (uid, True, "DigestPipeline"), kind
    deployment = await kube_api.get(PATHS["Deployment"])
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)
    assert "replicas" not in deployment["spec"]
    # no Deployment controller yet: the rollout is in progress
    assert condition(pipeline, "Progressing")["reason"] == "RolloutInProgress"
    assert condition(pipeline, "ImagePinned")["status"] == "True"
    await complete_rollout(kube_api)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", ready, within=30)
    assert pipeline is not None
    status = pipeline["status"]
    assert status["observedGeneration"] == pipeline["metadata"]["generation"]
    assert status["image"]["digest"] == DIGEST
    assert status["replicas"] == 0
    assert condition(pipeline, "Degraded")["status"] == "False"
    assert "Deployment/demo-worker" in await wait_for_event(kube_api, "Normal", "Created")
    await wait_for_event(kube_api, "Normal", "Ready")


async def test_spec_update_propagates(kube_api: KubeApi, operator: OperatorThread) -> None:
    await create_ready_pipeline(kube_api)
    await kube_api.patch(f"{DGP}/demo", {"spec": {"scaling": {"maxReplicas": 3}, "worker": {"concurrency": 9}}})
    await kube_api.wait_for(PATHS["ScaledObject"], lambda o: o is not None and o["spec"]["maxReplicaCount"] == 3)
    deployment = await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None and any(
        e == {"name": "DIGEST_CONCURRENCY", "value": "9"}
        for e in o["spec"]["template"]["spec"]["containers"][0]["env"]))
    assert deployment is not None
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: o is not None and o["status"].get(
        "observedGeneration") == o["metadata"]["generation"])
    assert pipeline is not None
    assert "ScaledObject/demo" in await wait_for_event(kube_api, "Normal", "Updated")


async def test_steady_state_and_restart_make_zero_writes(
    kube_api: KubeApi, operator: OperatorThread, operators: list[OperatorThread],
) -> None:
    await create_ready_pipeline(kube_api)
    await wait_until_quiet(kube_api, operator)  # the last writes of the convergence have landed
    children = tuple(PATHS.values())
    assert await observe_window(kube_api, operator, observed=children) == []  # the resync timer reconciled

    await asyncio.to_thread(operator.stop)
    mark = kube_api.mark()
    restarted = await asyncio.to_thread(OperatorThread(kube_api.url).start)
    operators.append(restarted)
    # resume, then the timer: the restart lists what it watches (Kopf the pipelines, the caches the children) and
    # asks nothing else
    made = await observe_window(kube_api, restarted, since=mark, observed=children)
    assert {request_kind(*r) for r in made} <= {"list", "discovery"}, made
    listed = {r[1] for r in made if request_kind(*r) == "list"}
    assert DGP.replace(f"/namespaces/{NS}", "") in listed and "/apis/apps/v1/deployments" in listed, listed


async def test_hand_edit_of_an_owned_field_is_repaired(kube_api: KubeApi, operator: OperatorThread) -> None:
    await create_ready_pipeline(kube_api)
    await kube_api.patch(PATHS["ScaledObject"], {"spec": {"maxReplicaCount": 99}})
    await kube_api.patch(PATHS["Deployment"], {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}})
    await kube_api.wait_for(PATHS["ScaledObject"], lambda o: o is not None and o["spec"]["maxReplicaCount"] == 10)
    await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None and o["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"] == 60)
    await wait_for_event(kube_api, "Warning", "DriftRepaired")
    drift = [m for t, r, m in await events(kube_api) if (t, r) == ("Warning", "DriftRepaired")]
    assert "ScaledObject/demo" in " ".join(drift)


async def test_deleted_child_is_recreated(kube_api: KubeApi, operator: OperatorThread) -> None:
    await create_ready_pipeline(kube_api)
    await kube_api.delete(PATHS["CronJob"])
    await kube_api.wait_for(PATHS["CronJob"], lambda o: o is not None)


async def test_invalid_spec_gets_a_condition_and_no_retry_storm(kube_api: KubeApi, operator: OperatorThread) -> None:
    body = minimal(scaling={"minReplicas": 5, "maxReplicas": 2})
    await kube_api.create(DGP, body)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Ready").get("reason") == "InvalidSpec")
    assert "spec.scaling: minReplicas (5) must be less than or equal to maxReplicas (2)" in condition(
        pipeline, "Ready")["message"]
    assert condition(pipeline, "Degraded")["status"] == "True"
    await asyncio.sleep(0.5)  # Kopf's Event and annotation writes for the refused create land
    # the resync timer keeps reconciling the invalid pipeline: no Kopf retries, no writes
    assert await observe_window(kube_api, operator, result="invalid") == []
    await wait_for_event(kube_api, "Warning", "InvalidSpec")
    warnings = [r for t, r, _ in await events(kube_api) if t == "Warning"]
    assert warnings.count("InvalidSpec") == 1
    assert await kube_api.get(PATHS["Deployment"]) is None
    # fixing the spec recovers
    await kube_api.patch(f"{DGP}/demo", {"spec": {"scaling": {"minReplicas": 0}}})
    await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None)


async def test_tag_only_image_is_refused_and_the_pinned_digest_keeps_running(
    kube_api: KubeApi, operator: OperatorThread,
) -> None:
    await create_ready_pipeline(kube_api)
    mark = kube_api.mark()
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": "registry.example.com/team/digest-worker:latest"}})
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("status") == "False")
    assert condition(pipeline, "ImagePinned")["reason"] == "TagNotAllowed"
    assert condition(pipeline, "Ready")["reason"] == "ImageNotPinned"
    await wait_for_reconciles(operator, operator.runtime.reconcile_count + 2)  # the timer reconciled the tag too
    assert cached(operator, PATHS["Deployment"]) is not None  # ... comparing with the Deployment it caches
    deployment = await kube_api.get(PATHS["Deployment"])
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)
    assert [w for w in kube_api.writes(mark) if w[1] == PATHS["Deployment"]] == []  # not even rewritten
    assert "is not pinned by digest" in await wait_for_event(kube_api, "Warning", "TagNotAllowed")


async def test_new_pipeline_with_a_tag_gets_no_workload(kube_api: KubeApi, operator: OperatorThread) -> None:
    """Without a pinned image the operator applies every child but the workload (render_children): the
    ServiceAccount, the DLQ monitor's ConfigMap, the TriggerAuthentication, the PodMonitor, the PrometheusRule and
    the NetworkPolicy; no Deployment, ScaledObject or CronJob, then or in any later reconcile."""
    applied = [kind for kind in PATHS if kind not in WORKLOAD]
    assert applied == ["ServiceAccount", "ConfigMap", "TriggerAuthentication", "PodMonitor", "PrometheusRule",
                       "NetworkPolicy"]
    await kube_api.create(DGP, minimal(image="registry.example.com/team/digest-worker:1.0"))
    await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("reason") == "TagNotAllowed")
    for kind in applied:
        await kube_api.wait_for(PATHS[kind], lambda o: o is not None)
    # reconciled again since (the resync timer): each later reconcile found no workload (its cache of every kind
    # is listed) and left it out
    runs = operator.runtime.reconcile_count
    await wait_for_reconciles(operator, runs + 2)
    for kind in WORKLOAD:
        assert cached(operator, PATHS[kind]) is None, kind
        assert await kube_api.get(PATHS[kind]) is None, kind
    assert [w for w in kube_api.writes() if w[1] in {PATHS[kind] for kind in WORKLOAD}] == []  # never written


@pytest.mark.parametrize(("method", "pattern", "status"), [
    ("PATCH", r"/deployments/demo-worker$", 500),
    ("PATCH", r"/scaledobjects/demo$", 409),
    ("PATCH", r"/configmaps/demo-dlq-monitor$", 429),
    ("GET", r"/cronjobs/demo-dlq-monitor$", 503),
    ("PATCH", r"/digestpipelines/demo/status$", 500),
])
async def test_transient_api_errors_converge(
    kube_api: KubeApi, operator: OperatorThread, method: str, pattern: str, status: int,
) -> None:
    fault = kube_api.fail_next(method, pattern, status, times=2)
    await create_ready_pipeline(kube_api)
    for path in PATHS.values():
        assert await kube_api.get(path) is not None
    fault.assert_consumed()  # the operator's requests got both errors, and converged anyway
    assert api_errors(operator, status) >= 2


async def test_writes_are_reported_even_when_the_status_write_fails(kube_api: KubeApi, operator: OperatorThread) \
        -> None:
    """The children are written, then the status write conflicts (Kopf moved the resourceVersion, say) on every
    attempt of `write_status`, so the reconcile fails: the retry finds nothing to write, so the first attempt's
    Events and metrics must not be lost."""
    from digest_operator.handlers import write_status

    attempts = inspect.signature(write_status).parameters["attempts"].default  # one 409 fewer is retried away
    fault = kube_api.fail_next("PATCH", r"/digestpipelines/demo/status$", 409, times=attempts)
    await create_ready_pipeline(kube_api)
    fault.assert_consumed()
    created = await wait_for_event(kube_api, "Normal", "Created")
    assert "Deployment/demo-worker" in created
    assert operator.runtime.metrics.child_writes.labels("Created", "Deployment")._value.get() == 1


async def test_delete_removes_children(kube_api: KubeApi, operator: OperatorThread) -> None:
    created = await create_ready_pipeline(kube_api)
    # Kopf's finalizer: the deletion passes the operator, which forgets the pipeline (no resync of it goes on)
    assert "digest.dev/finalizer" in created["metadata"].get("finalizers", [])
    await kube_api.delete(f"{DGP}/demo")
    await kube_api.wait_for(f"{DGP}/demo", lambda o: o is None)
    for path in PATHS.values():
        await kube_api.wait_for(path, lambda o: o is None)


async def test_two_operators_do_not_both_act(kube_api: KubeApi, operators: list[OperatorThread]) -> None:
    await kube_api.create("/apis/kopf.dev/v1/clusterkopfpeerings",
                          {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "digest"}})
    # a generous lifetime: a leader's keep-alive delayed by a loaded machine must not look like its death
    config = dataclasses.replace(FAST, peering_lifetime=30)
    leader = await asyncio.to_thread(OperatorThread(kube_api.url, config=config, peering="digest", priority=100).start)
    operators.append(leader)
    # Kopf peering is exclusive once a replica has announced itself; wait for the leader's record (as in a rolling
    # update). Replicas started in the very same instant may both act briefly: reconciles are idempotent.
    await kube_api.wait_for("/apis/kopf.dev/v1/clusterkopfpeerings/digest", lambda o: bool((o or {}).get("status")))
    follower = await asyncio.to_thread(OperatorThread(kube_api.url, config=config, peering="digest", priority=10).start)
    operators.append(follower)
    await create_ready_pipeline(kube_api)
    await kube_api.patch(f"{DGP}/demo", {"spec": {"scaling": {"maxReplicas": 4}}})
    await kube_api.wait_for(PATHS["ScaledObject"], lambda o: o is not None and o["spec"]["maxReplicaCount"] == 4)
    assert leader.runtime.reconcile_count > 0
    assert follower.runtime.reconcile_count == 0

    # the leader goes away: after its peering record expires, the follower takes over
    await asyncio.to_thread(leader.stop)
    await kube_api.patch(f"{DGP}/demo", {"spec": {"scaling": {"maxReplicas": 5}}})
    await kube_api.wait_for(PATHS["ScaledObject"], lambda o: o is not None and o["spec"]["maxReplicaCount"] == 5,
                            within=30)
    await wait_for_reconciles(follower, 1)  # the count moves when the reconcile that applied it returns


async def test_a_replica_paused_by_a_higher_priority_one_stops_resyncing(
        kube_api: KubeApi, operators: list[OperatorThread]) -> None:
    """The resyncs and wake-ups are the operator's own work queue, not Kopf's handlers: they stop too when Kopf
    peering pauses the replica, and the replica that takes over does them."""
    await kube_api.create("/apis/kopf.dev/v1/clusterkopfpeerings",
                          {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "digest"}})
    config = dataclasses.replace(FAST, peering_lifetime=30)
    first = await asyncio.to_thread(OperatorThread(kube_api.url, config=config, peering="digest", priority=10).start)
    operators.append(first)
    await create_ready_pipeline(kube_api)
    await wait_for_reconciles(first, first.runtime.reconcile_count + 3)  # resyncing (every 0.5 s)
    second = await asyncio.to_thread(OperatorThread(kube_api.url, config=config, peering="digest", priority=100).start)
    operators.append(second)
    await wait_for_reconciles(second, 2)  # the higher priority acts: resumed, then resynced
    await asyncio.sleep(1.0)  # a reconcile of the first one that was under way when it paused ends
    paused_at, woken = first.runtime.reconcile_count, second.runtime.wake_count
    await kube_api.delete(PATHS["ConfigMap"])  # a child deleted: the replica that acts is woken and repairs it
    await kube_api.wait_for(PATHS["ConfigMap"], lambda o: o is not None, within=10)
    resyncs = second.runtime.reconcile_count
    await asyncio.sleep(6 * FAST.resync_seconds)
    assert second.runtime.wake_count > woken
    assert second.runtime.reconcile_count >= resyncs + 3
    assert first.runtime.reconcile_count == paused_at
    assert first.runtime.queue is not None and len(first.runtime.queue.schedule) == 0  # forgotten until resumed


async def test_operator_creates_its_peering_object(kube_api: KubeApi, operators: list[OperatorThread]) -> None:
    """The installation ships no ClusterKopfPeering (it would be applied with its CRD, which kubectl refuses on a
    fresh cluster): the operator applies it at start-up, before Kopf's keep-alive needs it. Without it, mandatory
    peering keeps every replica paused."""
    peering = "/apis/kopf.dev/v1/clusterkopfpeerings/digest"
    assert await kube_api.get(peering) is None
    op = await asyncio.to_thread(OperatorThread(kube_api.url, peering="digest").start)
    operators.append(op)
    created = await kube_api.wait_for(peering, lambda o: bool((o or {}).get("status")))  # the keep-alive landed
    assert created is not None and created["kind"] == "ClusterKopfPeering"
    assert ("PATCH", peering, "fieldManager=digest-operator&force=true") in kube_api.requests()
    await create_ready_pipeline(kube_api)  # not paused: it reconciles
    assert op.runtime.reconcile_count > 0


async def test_missing_keda_crds_are_reported_as_apply_failed() -> None:
    """KEDA's CRDs are not installed: the API server answers `404 page not found` in plain text, and the pipeline
    reports which kinds are missing instead of the reconcile dying on the body."""
    async with run_kube_api(unserved_groups=frozenset({"keda.sh"})) as kube_api:
        op = await asyncio.to_thread(OperatorThread(kube_api.url).start)
        try:
            await kube_api.create(DGP, minimal())
            pipeline = await kube_api.wait_for(
                f"{DGP}/demo", lambda o: condition(o, "Ready").get("reason") == "ApplyFailed")
            message = condition(pipeline, "Degraded")["message"]
            assert message == (
                "applying TriggerAuthentication demo-servicebus failed: the API server does not serve "
                "keda.sh/v1alpha1 TriggerAuthentication: is the KEDA CRD triggerauthentications.keda.sh installed?; "
                "applying ScaledObject demo failed: the API server does not serve keda.sh/v1alpha1 ScaledObject: "
                "is the KEDA CRD scaledobjects.keda.sh installed?")
            assert condition(pipeline, "Degraded")["reason"] == "ApplyFailed"
            for kind in ("ServiceAccount", "ConfigMap", "Deployment", "CronJob", "PodMonitor", "PrometheusRule"):
                assert await kube_api.get(PATHS[kind]) is not None, kind  # the other children were applied
            assert message == await wait_for_event(kube_api, "Warning", "ApplyFailed")
            runs = op.runtime.reconcile_count
            await wait_for_reconciles(op, runs + 2)  # retried, and still reported the same way
            op.check()
            again = await kube_api.get(f"{DGP}/demo")
            assert condition(again, "Degraded")["message"] == message
        finally:
            await asyncio.to_thread(op.stop)


async def test_refused_child_write_is_reported_then_retried(kube_api: KubeApi, operator: OperatorThread) -> None:
    fault = kube_api.fail_next("PATCH", r"/podmonitors/demo-worker$", 403, times=2, reason="Forbidden")
    await kube_api.create(DGP, minimal())
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Ready").get("reason") == "ApplyFailed")
    assert "PodMonitor demo-worker failed: 403" in condition(pipeline, "Degraded")["message"]
    assert await kube_api.get(PATHS["Deployment"]) is not None  # the other children were applied
    await kube_api.wait_for(PATHS["PodMonitor"], lambda o: o is not None, within=30)
    await complete_rollout(kube_api)
    await kube_api.wait_for(f"{DGP}/demo", ready, within=30)
    fault.assert_consumed()  # refused twice, then applied by a retry
    assert "PodMonitor demo-worker" in await wait_for_event(kube_api, "Warning", "ApplyFailed")


async def test_rollout_progress_reaches_status_without_the_resync_timer(
    kube_api: KubeApi, operators: list[OperatorThread],
) -> None:
    slow_timer = dataclasses.replace(FAST, resync_seconds=3600)
    operators.append(await asyncio.to_thread(OperatorThread(kube_api.url, config=slow_timer).start))
    await kube_api.create(DGP, minimal())
    await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Ready").get("reason") == "RolloutInProgress")
    await complete_rollout(kube_api, replicas=2)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", ready)
    assert pipeline is not None
    assert (pipeline["status"]["replicas"], pipeline["status"]["readyReplicas"]) == (2, 2)


async def test_removed_spec_fields_are_removed_from_children(kube_api: KubeApi, operator: OperatorThread) -> None:
    tenant = "99999999-8888-7777-6666-555555555555"
    auth = {"workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555", "tenantId": tenant}}
    await create_ready_pipeline(kube_api, worker={"nodeSelector": {"pool": "digests"}},
                                serviceBus={**minimal()["spec"]["serviceBus"], "auth": auth})
    trigger_auth = await kube_api.get(PATHS["TriggerAuthentication"])
    assert trigger_auth is not None
    assert trigger_auth["spec"]["podIdentity"]["identityTenantId"] == tenant
    await kube_api.patch(f"{DGP}/demo", {"spec": {"worker": {"nodeSelector": None},
                                                  "serviceBus": {"auth": {"workloadIdentity": {"tenantId": None}}}}})
    await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None and "nodeSelector" not in o["spec"][
        "template"]["spec"])
    await kube_api.wait_for(PATHS["TriggerAuthentication"], lambda o: o is not None and "identityTenantId" not in o[
        "spec"]["podIdentity"])
    assert "Deployment/demo-worker" in await wait_for_event(kube_api, "Normal", "Updated")


async def test_status_writes_carry_the_resource_version_they_were_computed_from(kube_api: KubeApi) -> None:
    import kopf

    from digest_operator.k8s import ApiError, KubeClient

    created = await kube_api.create(DGP, minimal())
    stale = created["metadata"]["resourceVersion"]
    await kube_api.patch(f"{DGP}/demo/status", {"status": {"observedGeneration": 1}})  # someone else wrote
    client = KubeClient(lambda: kopf.ConnectionInfo(server=kube_api.url), field_manager="test")
    try:
        with pytest.raises(ApiError) as info:
            await client.patch_status("digest.dev/v1alpha1", "digestpipelines", NS, "demo",
                                      {"replicas": 1}, resource_version=stale)
        assert info.value.status == 409
        assert info.value.transient  # retried by the handler with a fresh read
    finally:
        await client.close()


async def test_render_prints_exactly_what_the_operator_creates(kube_api: KubeApi, operator: OperatorThread) -> None:
    """`digestctl render` on the stored pipeline (with its uid) equals the children's owned fields."""
    import yaml
    from click.testing import CliRunner

    from digest_cli import main
    from digest_operator.drift import in_sync

    await kube_api.create(DGP, minimal())
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: bool(condition(o, "Ready")))
    assert pipeline is not None
    stored = {k: pipeline[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    result = CliRunner().invoke(main, ["render", "-f", "-"], input=yaml.safe_dump(stored))
    assert result.exit_code == 0, result.output
    rendered = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}
    assert set(rendered) == set(PATHS)
    for kind, path in PATHS.items():
        live = await kube_api.get(path)
        assert live is not None
        assert in_sync(rendered[kind], live), kind
        assert live["metadata"]["ownerReferences"] == rendered[kind]["metadata"]["ownerReferences"]
