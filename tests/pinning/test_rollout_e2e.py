"""End to end: operator-driven rollouts, tracked in status.rollout / status.history, with automatic rollback.

The test plays the Deployment controller through the emulated API's status subresource.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.test_operator import DGP, PATHS, condition, wait_for_event, wait_for_reconciles
from tests.support.kubeapi import KubeApi
from tests.support.operator_thread import OperatorThread
from tests.support.samples import minimal

pytestmark = pytest.mark.e2e

REPO = "registry.example.com/team/digest-worker"
GOOD, BAD, NEXT = ("sha256:" + c * 64 for c in "abc")


@pytest.fixture
async def operator(kube_api: KubeApi) -> AsyncIterator[OperatorThread]:
    op = await asyncio.to_thread(OperatorThread(kube_api.url).start)
    yield op
    await asyncio.to_thread(op.stop)


def image_of(deployment: dict[str, Any] | None) -> str:
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def report(kube_api: KubeApi, *, image: str, failed: bool = False, replicas: int = 1) -> None:
    """Play the Deployment controller for the Deployment running `image`: complete, or exceed the deadline."""
    deployment = await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None and image_of(o) == image)
    assert deployment is not None
    progressing = ({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "demo-worker-x" has timed out progressing.'} if failed else
                   {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ok"})
    ready = 0 if failed else replicas
    await kube_api.patch(PATHS["Deployment"], {"spec": {"replicas": replicas}})
    generation = (await kube_api.get(PATHS["Deployment"]) or {})["metadata"]["generation"]
    await kube_api.patch(PATHS["Deployment"] + "/status", {"status": {
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": ready, "readyReplicas": ready,
        "availableReplicas": ready, "conditions": [progressing]}})


def rollout(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((obj or {}).get("status") or {}).get("rollout") or {})


def results(obj: dict[str, Any] | None) -> list[tuple[int, str, str]]:
    return [(h["revision"], h["digest"], h["result"]) for h in ((obj or {}).get("status") or {}).get("history", [])]


async def test_rollout_progress_is_reported_and_recorded(kube_api: KubeApi, operator: OperatorThread) -> None:
    await kube_api.create(DGP, minimal(image=f"{REPO}@{GOOD}"))
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Progressing")
    record = rollout(pipeline)
    assert (record["revision"], record["digest"], record["image"]) == (1, GOOD, f"{REPO}@{GOOD}")
    assert record["startedTime"] and "finishedTime" not in record
    assert condition(pipeline, "Progressing")["status"] == "True"
    await report(kube_api, image=f"{REPO}@{GOOD}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Complete")
    assert rollout(pipeline)["finishedTime"]
    assert condition(pipeline, "Progressing")["reason"] == "RolloutComplete"
    assert results(pipeline) == [(1, GOOD, "Complete")]

    # a failed rollout without autoRollback: reported, not reverted
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{BAD}"}})
    await report(kube_api, image=f"{REPO}@{BAD}", failed=True)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Failed")
    assert condition(pipeline, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert results(pipeline) == [(2, BAD, "Failed"), (1, GOOD, "Complete")]
    assert image_of(await kube_api.get(PATHS["Deployment"])) == f"{REPO}@{BAD}"


async def test_failed_rollout_is_rolled_back_to_the_last_good_digest(
    kube_api: KubeApi, operator: OperatorThread,
) -> None:
    await kube_api.create(DGP, minimal(image=f"{REPO}@{GOOD}", rollout={"autoRollback": True, "historyLimit": 3}))
    await report(kube_api, image=f"{REPO}@{GOOD}")
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Complete")

    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{BAD}"}})
    await report(kube_api, image=f"{REPO}@{BAD}", failed=True)
    deployment = await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{GOOD}")
    assert deployment is not None
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Degraded").get("reason")
                                       == "RolledBack")
    assert pipeline is not None
    assert condition(pipeline, "Degraded")["status"] == "True"
    assert results(pipeline)[:2] == [(3, GOOD, "Progressing"), (2, BAD, "RolledBack")]
    rollback = pipeline["status"]["rollback"]
    assert (rollback["failedImage"], rollback["restoredImage"]) == (f"{REPO}@{BAD}", f"{REPO}@{GOOD}")
    message = await wait_for_event(kube_api, "Warning", "RolledBack")
    assert BAD in message and GOOD in message

    # the restored digest completes; the bad digest is not tried again while the spec is unchanged
    await report(kube_api, image=f"{REPO}@{GOOD}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Complete")
    assert results(pipeline) == [(3, GOOD, "Complete"), (2, BAD, "RolledBack"), (1, GOOD, "Complete")]
    await wait_for_reconciles(operator, operator.runtime.reconcile_count + 3)  # the resync timer, three times
    assert image_of(await kube_api.get(PATHS["Deployment"])) == f"{REPO}@{GOOD}"
    assert condition(await kube_api.get(f"{DGP}/demo"), "Degraded")["reason"] == "RolledBack"

    # a spec change lifts the block; the history keeps the last three
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{NEXT}"}})
    await report(kube_api, image=f"{REPO}@{NEXT}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("digest") == NEXT and rollout(o).get(
        "phase") == "Complete")
    assert condition(pipeline, "Degraded")["status"] == "False"
    assert pipeline is not None and "rollback" not in pipeline["status"]
    assert results(pipeline) == [(4, NEXT, "Complete"), (3, GOOD, "Complete"), (2, BAD, "RolledBack")]


def worker_pod(deployment: dict[str, Any], image: str, reason: str) -> dict[str, Any]:
    labels = deployment["spec"]["selector"]["matchLabels"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo-worker-new-1", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "worker", "image": image}]},
            "status": {"containerStatuses": [{"name": "worker", "image": image, "restartCount": 4, "ready": False,
                                              "state": {"waiting": {"reason": reason, "message": "back-off 40s"}}}]}}


async def test_crash_looping_new_pods_fail_the_rollout_before_the_deadline(
    kube_api: KubeApi, operator: OperatorThread,
) -> None:
    await kube_api.create(DGP, minimal(image=f"{REPO}@{GOOD}", rollout={"autoRollback": True}))
    await report(kube_api, image=f"{REPO}@{GOOD}")
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Complete")
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{BAD}"}})
    deployment = await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{BAD}")
    assert deployment is not None
    pod = worker_pod(deployment, f"{REPO}@{BAD}", "CrashLoopBackOff")
    await kube_api.create("/api/v1/namespaces/default/pods", pod)  # the kubelet reports through /status:
    await kube_api.patch("/api/v1/namespaces/default/pods/demo-worker-new-1/status", {"status": pod["status"]})
    await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{GOOD}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Degraded").get("reason")
                                       == "RolledBack")
    assert pipeline is not None and results(pipeline)[1] == (2, BAD, "RolledBack")
    message = await wait_for_event(kube_api, "Warning", "RolledBack")
    assert "pod demo-worker-new-1 is in CrashLoopBackOff" in message and BAD in message and GOOD in message
    assert "CrashLoopBackOff" in pipeline["status"]["rollback"]["message"]


async def test_a_digest_rolled_out_at_zero_replicas_is_rolled_back_when_its_first_scale_up_fails(
    kube_api: KubeApi, operator: OperatorThread,
) -> None:
    """KEDA keeps idle workers at zero: a rollout then completes without a pod; the first scale-up verifies it."""
    await kube_api.create(DGP, minimal(image=f"{REPO}@{GOOD}", rollout={"autoRollback": True}))
    await report(kube_api, image=f"{REPO}@{GOOD}", replicas=1)
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("verified") is True)
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{BAD}"}})
    await report(kube_api, image=f"{REPO}@{BAD}", replicas=0)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("digest") == BAD and rollout(o).get(
        "phase") == "Complete")
    assert pipeline is not None and rollout(pipeline)["verified"] is False
    await report(kube_api, image=f"{REPO}@{BAD}", replicas=2, failed=True)  # messages arrive; KEDA scales up
    await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{GOOD}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Degraded").get("reason")
                                       == "RolledBack")
    assert pipeline is not None and results(pipeline)[1] == (2, BAD, "RolledBack")
