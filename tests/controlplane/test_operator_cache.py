"""Issue 17: the operator's watch caches against the real kube-apiserver and kube-controller-manager, counted in the
API server's audit log. A restart lists and watches and writes nothing; a finished DLQ monitor reaches the status
long before any resync; a watch expiry (the API server restarted, etcd compacted) is survived by relisting, with
no write but the repairs of what changed meanwhile.

Each test runs its own operator (standalone, as the operator's service account with the RBAC of `manifests/`).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from digest_operator.cache import owned_kinds
from tests.controlplane.test_operator_cluster import (
    OPERATOR_USER,
    WRITE_VERBS,
    child_paths,
    condition,
    create_pipeline,
    describe,
    dgp,
    operator_requests,
    play_keda,
    wait_ready,
)
from tests.e2e.test_dead_letter_status import report, terminated
from tests.support.controlplane import ControlPlane
from tests.support.operator_thread import FAST, OperatorThread

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker

SLOW_RESYNC = 3600.0  # a test that passes cannot have been helped by the resync timer


@pytest.fixture
def start(control_plane: ControlPlane, operator_rbac: str) -> Iterator[Any]:
    """Start operators (standalone, as the operator's service account); all are stopped after the test."""
    started: list[OperatorThread] = []

    def run(**config: Any) -> OperatorThread:
        op = OperatorThread(control_plane.server, config=dataclasses.replace(FAST, **config))
        op.runtime.credentials = lambda: control_plane.connection_info(operator_rbac)
        started.append(op.start())
        return op

    yield run
    for op in started:
        op.stop()


def ready_pipeline(plane: ControlPlane, namespace: str) -> str:
    """A converged pipeline (worker scaled to zero by a stand-in for KEDA); its uid."""
    uid = str(create_pipeline(plane, namespace)["metadata"]["uid"])
    plane.wait_for(child_paths(namespace)["Deployment"], lambda o: o is not None, within=60, what="worker")
    play_keda(plane, namespace, 0)
    wait_ready(plane, namespace)
    return uid


def settle(plane: ControlPlane, op: OperatorThread, namespace: str, uid: str) -> None:
    """Until the pipeline (status included) stays unchanged across three reconciles of it."""
    deadline = time.monotonic() + 60
    while True:
        version = (plane.get(dgp(namespace)) or {})["metadata"]["resourceVersion"]
        count = op.runtime.reconciles_of(uid)
        while op.runtime.reconciles_of(uid) < count + 3:
            assert time.monotonic() < deadline, "the pipeline was not reconciled"
            time.sleep(0.05)
        if (plane.get(dgp(namespace)) or {})["metadata"]["resourceVersion"] == version:
            return


def operator_calls(plane: ControlPlane, start: int, namespace: str) -> list[dict[str, Any]]:
    """The operator's calls on resources (discovery apart) since audit-log offset `start`: cluster-wide ones and
    those in `namespace` (pipelines other tests left elsewhere are not this test's)."""
    entries, _ = plane.audit_entries(start)
    return [e for e in entries if e["user"]["username"] == OPERATOR_USER and (e.get("objectRef") or {}).get(
        "resource") and e["objectRef"].get("namespace") in (None, namespace)]


def test_a_restart_lists_and_watches_and_writes_nothing(
        control_plane: ControlPlane, start: Any, namespace: str) -> None:
    first = start()
    uid = ready_pipeline(control_plane, namespace)
    settle(control_plane, first, namespace, uid)
    first.stop()
    _, offset = control_plane.audit_entries(0)
    second = start()
    deadline = time.monotonic() + 60
    while second.runtime.reconciles_of(uid) < 3:  # resumed, then resynced twice
        assert time.monotonic() < deadline, "the restarted operator did not reconcile the pipeline"
        time.sleep(0.05)
    time.sleep(0.5)  # the audit entry of a last request may land just after its answer
    calls = operator_calls(control_plane, offset, namespace)
    assert {e["verb"] for e in calls} == {"list", "watch"}, yaml.safe_dump([describe(e) for e in calls
                                                                             if e["verb"] not in ("list", "watch")])
    listed = {e["objectRef"]["resource"] for e in calls if e["verb"] == "list"}
    assert listed == {"digestpipelines"} | {k.plural for k in owned_kinds()}, listed  # Kopf's and the caches
    assert all(e["objectRef"].get("namespace") is None for e in calls)  # cluster-wide: nothing per pipeline
    assert operator_requests(control_plane, offset, namespace) == []


def test_a_finished_monitor_job_reaches_the_status_before_any_resync(
        control_plane: ControlPlane, start: Any, namespace: str) -> None:
    """The DLQ monitor's pod finishing (as the kubelet reports it) wakes the pipeline through the pod cache: the
    report is in status.deadLetter within seconds, with a resync timer of an hour. Nothing is read for it."""
    op = start(resync_seconds=SLOW_RESYNC)
    ready_pipeline(control_plane, namespace)  # the rollout's completion came by the Deployment cache already
    cronjob = control_plane.get(child_paths(namespace)["CronJob"])
    assert cronjob is not None
    template = cronjob["spec"]["jobTemplate"]
    # a Job of the CronJob, as the CronJob controller makes it (kubectl create job --from=cronjob/...)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "demo-dlq-monitor-manual", "namespace": namespace, "labels": template["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob["metadata"]["name"],
                             "uid": cronjob["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": template["spec"]}
    code, answer = control_plane.request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    assert code == 201, answer
    pods = control_plane.wait_for(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3Ddemo-dlq-monitor-manual",
        lambda o: bool((o or {}).get("items")), what="the Job controller's pod")
    assert pods is not None
    pod = pods["items"][0]["metadata"]["name"]
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    _, offset = control_plane.audit_entries(0)
    finished = time.monotonic()
    code, answer = control_plane.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod}/status",
                                         terminated(report(5, old)), content_type="application/merge-patch+json")
    assert code == 200, answer
    pipeline = control_plane.wait_for(dgp(namespace), lambda o: ((o or {}).get("status") or {}).get(
        "deadLetter", {}).get("count") == 5, within=30, what="status.deadLetter from the report")
    took = time.monotonic() - finished
    assert took < 15, f"{took:.1f} s"
    assert pipeline is not None and pipeline["status"]["deadLetter"]["lastRun"]["pod"] == pod
    assert condition(pipeline, "DeadLetterClear")["reason"] == "DeadLettersPending"
    assert op.runtime.wake_count > 0
    time.sleep(0.5)
    made = [describe(e) for e in operator_requests(control_plane, offset, namespace)]
    assert all(m.startswith(("patch digest.dev/digestpipelines/status", "create /events")) for m in made), made


def test_a_watch_expiry_is_survived_without_a_wrong_write(
        control_plane: ControlPlane, start: Any, namespace: str) -> None:
    """kube-apiserver restarts and etcd is compacted meanwhile: every watch drops, and resuming from the versions
    it had answers 410 Gone. The caches list again; what changed while they were blind (a child deleted, another
    edited) is repaired at once (the resync is an hour away), and nothing else is written."""
    # informers retry a dropped watch after 3 s: the changes below land while no watch is open
    op = start(resync_seconds=SLOW_RESYNC, error_backoffs=(3.0,))
    uid = ready_pipeline(control_plane, namespace)
    paths = child_paths(namespace)
    # settled: no write in the namespace for a while (convergence's last writes have landed)
    deadline = time.monotonic() + 60
    while True:
        _, mark = control_plane.audit_entries(0)
        time.sleep(2)
        if not [e for e in operator_requests(control_plane, mark, namespace) if e["verb"] in WRITE_VERBS]:
            break
        assert time.monotonic() < deadline, "still writing"
    lists = {key: informer.lists for key, informer in op.runtime.cache.informers.items()}
    reconciled = op.runtime.reconciles_of(uid)
    _, offset = control_plane.audit_entries(0)
    control_plane.restart_apiserver(compact=True)
    code, answer = control_plane.request("DELETE", paths["ConfigMap"])
    assert code == 200, answer
    code, answer = control_plane.request("PATCH", paths["ScaledObject"], {"spec": {"maxReplicaCount": 99}},
                                         content_type="application/merge-patch+json")
    assert code == 200, answer
    control_plane.wait_for(paths["ConfigMap"], lambda o: o is not None, within=60, what="the ConfigMap recreated")
    control_plane.wait_for(paths["ScaledObject"], lambda o: (o or {}).get("spec", {}).get("maxReplicaCount") == 10,
                           within=60, what="the ScaledObject repaired")
    deadline = time.monotonic() + 30
    while any(informer.lists <= lists[key] for key, informer in op.runtime.cache.informers.items()):
        assert time.monotonic() < deadline, {k: (i.lists, lists[k]) for k, i in op.runtime.cache.informers.items()}
        time.sleep(0.1)
    assert op.runtime.reconciles_of(uid) > reconciled
    time.sleep(1.0)  # the last writes' audit entries
    writes = [describe(e) for e in operator_requests(control_plane, offset, namespace) if e["verb"] in WRITE_VERBS]
    repairs = {f"patch /configmaps {paths['ConfigMap'].rsplit('/', 1)[1]} -> 201",
               f"patch keda.sh/scaledobjects {paths['ScaledObject'].rsplit('/', 1)[1]} -> 200"}
    assert repairs <= set(writes), writes
    others = [w for w in writes if w not in repairs and not w.startswith(("create /events",
                                                                          "patch digest.dev/digestpipelines/status"))]
    assert others == [], others
    assert wait_ready(control_plane, namespace)["metadata"]["uid"] == uid
