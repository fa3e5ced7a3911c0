"""End to end: a finished DLQ monitor pod's report reaches status.deadLetter, the DeadLetterClear condition,
an Event, the operator's metrics and the `kubectl get dgp` Dead-letter column (the CRD's printer column)."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest

from digest_api.crd import PRINTER_COLUMNS
from digest_operator.render.dlq_monitor import COMPONENT
from digest_operator.render.meta import Owner, labels
from tests.e2e.test_operator import DGP, NS, condition, create_ready_pipeline, operator, wait_for_event
from tests.support.kubeapi import KubeApi
from tests.support.operator_thread import OperatorThread

pytestmark = pytest.mark.e2e
__all__ = ["operator"]  # fixtures


# what the monitor's jobTemplate gives its Jobs and pods (the operator's caches select by these labels)
LABELS = labels(Owner("demo", NS), COMPONENT)


def controller(kind: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": obj["apiVersion"], "kind": kind, "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"], "controller": True}]


async def monitor_job(kube_api: KubeApi, name: str) -> dict[str, Any]:
    """A Job as the CronJob controller creates it: labelled from the jobTemplate, controlled by the CronJob."""
    cronjob = await kube_api.wait_for(f"/apis/batch/v1/namespaces/{NS}/cronjobs/demo-dlq-monitor",
                                      lambda o: o is not None, within=30)
    assert cronjob is not None
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": name, "namespace": NS, "labels": LABELS, "ownerReferences": controller("CronJob", cronjob)},
        "spec": {"template": {"spec": {"containers": [{"name": "dlq-monitor", "image": "x"}],
                                       "restartPolicy": "Never"}}}}
    created: dict[str, Any] = await kube_api.create(f"/apis/batch/v1/namespaces/{NS}/jobs", job)
    return created


def monitor_pod(name: str, job: dict[str, Any] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": LABELS}
    if job is not None:
        metadata["ownerReferences"] = controller("Job", job)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "dlq-monitor", "image": "x"}], "restartPolicy": "Never"}}


def terminated(report: dict[str, Any]) -> dict[str, Any]:
    finished = datetime.datetime.now(datetime.UTC).isoformat()
    return {"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "dlq-monitor", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(report),
                                 "finishedAt": finished}}}]}}


def report(count: int, oldest: datetime.datetime, **extra: Any) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    return {"v": 1, "pipeline": f"{NS}/demo", "queue": "digests", "time": now.isoformat(), "mode": "Active",
            "count": count, "oldestEnqueuedTime": oldest.isoformat(), "decisions": {"Requeue": 4},
            "reasons": {}, "requeued": 4, "parked": 0, "left": 0, "failed": 0,
            "circuit": {"state": "Closed", "returned": 0, "threshold": 10}, "errors": [], **extra}


async def test_monitor_report_fills_the_status(kube_api: KubeApi, operator: OperatorThread) -> None:
    await create_ready_pipeline(kube_api)
    pods = f"/api/v1/namespaces/{NS}/pods"
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    first = report(7, old)
    # a pod with the pipeline's labels but no Job of the CronJob behind it: its (newer, empty) report is ignored
    planted = report(0, old, time=(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat())
    await kube_api.create(pods, monitor_pod("planted", None))
    await kube_api.patch(f"{pods}/planted/status", terminated(planted))
    job = await monitor_job(kube_api, "demo-dlq-monitor-1")
    await kube_api.create(pods, monitor_pod("demo-dlq-monitor-1", job))
    await kube_api.patch(f"{pods}/demo-dlq-monitor-1/status", terminated(first))
    obj = await kube_api.wait_for(f"{DGP}/demo", lambda o: ((o or {}).get("status") or {}).get(
        "deadLetter", {}).get("count") == 7, within=30)
    assert obj is not None
    dead = obj["status"]["deadLetter"]
    assert dead["lastRun"]["requeued"] == 4 and dead["circuit"] == "Closed"
    assert dead["lastRun"]["pod"] == "demo-dlq-monitor-1"
    assert (condition(obj, "DeadLetterClear")["status"], condition(obj, "DeadLetterClear")["reason"]) == \
        ("False", "DeadLettersPending")
    assert "requeued 4" in await wait_for_event(kube_api, "Normal", "DeadLettersRequeued")
    column = next(c for c in PRINTER_COLUMNS if c["name"] == "Dead-letter")
    assert column["jsonPath"] == ".status.deadLetter.count"
    await wait_for_metric(operator, "digest_pipeline_dead_letter_messages", 7)

    cleared = report(0, old, requeued=7, circuit={"state": "Open", "returned": 12, "threshold": 10})
    cleared["oldestEnqueuedTime"] = None
    await kube_api.create(pods, monitor_pod("demo-dlq-monitor-2", await monitor_job(kube_api, "demo-dlq-monitor-2")))
    await kube_api.patch(f"{pods}/demo-dlq-monitor-2/status", terminated(cleared))
    obj = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "DeadLetterClear").get("reason") == "Empty",
                                  within=30)
    assert obj is not None and obj["status"]["deadLetter"]["count"] == 0
    assert obj["status"]["deadLetter"]["circuit"] == "Open"
    await wait_for_event(kube_api, "Warning", "RequeueCircuitOpen")
    await wait_for_metric(operator, "digest_pipeline_dead_letter_circuit_open", 1)
    await wait_for_metric(operator, "digest_pipeline_dead_letter_handled_total", 11, outcome="requeued")


async def wait_for_metric(op: OperatorThread, name: str, value: float, **labels: str) -> None:
    registry = op.runtime.metrics.registry
    wanted = {"pipeline_namespace": NS, "pipeline": "demo", **labels}
    deadline = asyncio.get_running_loop().time() + 10
    while registry.get_sample_value(name, wanted) != value:
        assert asyncio.get_running_loop().time() < deadline, registry.get_sample_value(name, wanted)
        await asyncio.sleep(0.05)
