"""End to end: a finished DLQ monitor pod's report reaches status.deadLetter, the DeadLetterClear condition,
an Event, the operator's metrics and the `kubectl get dgp` Dead-letter column (the CRD's printer column)."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest

from digest_api.crd import PRINTER_COLUMNS
from tests.e2e.test_operator import DGP, NS, condition, create_ready_pipeline, operator, wait_for_event
from tests.support.kubeapi import KubeApi
from tests.support.operator_thread import OperatorThread

pytestmark = pytest.mark.e2e
__all__ = ["operator"]  # fixtures


def monitor_pod(name: str, report: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {
        "digest.dev/pipeline": "demo", "app.kubernetes.io/component": "dlq-monitor",
        "app.kubernetes.io/instance": "demo"}},
        "spec": {"containers": [{"name": "dlq-monitor", "image": "x"}], "restartPolicy": "Never"}}


def terminated(report: dict[str, Any]) -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "dlq-monitor", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(report)}}}]}}


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
    await kube_api.create(pods, monitor_pod("demo-dlq-monitor-1", first))
    await kube_api.patch(f"{pods}/demo-dlq-monitor-1/status", terminated(first))
    obj = await kube_api.wait_for(f"{DGP}/demo", lambda o: ((o or {}).get("status") or {}).get(
        "deadLetter", {}).get("count") == 7, within=30)
    assert obj is not None
    dead = obj["status"]["deadLetter"]
    assert dead["lastRun"]["requeued"] == 4 and dead["circuit"] == "Closed"
    assert (condition(obj, "DeadLetterClear")["status"], condition(obj, "DeadLetterClear")["reason"]) == \
        ("False", "DeadLettersPending")
    assert "requeued 4" in await wait_for_event(kube_api, "Normal", "DeadLettersRequeued")
    column = next(c for c in PRINTER_COLUMNS if c["name"] == "Dead-letter")
    assert column["jsonPath"] == ".status.deadLetter.count"
    await wait_for_metric(operator, "digest_pipeline_dead_letter_messages", 7)

    cleared = report(0, old, requeued=7, circuit={"state": "Open", "returned": 12, "threshold": 10})
    cleared["oldestEnqueuedTime"] = None
    await kube_api.create(pods, monitor_pod("demo-dlq-monitor-2", cleared))
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
