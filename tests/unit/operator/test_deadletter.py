"""The DLQ monitor report → status.deadLetter, the DeadLetterClear condition, Events, metrics; and the reconcile
reading it from the newest finished monitor pod."""

from __future__ import annotations

import datetime
import json
from typing import Any

from digest_operator import deadletter
from digest_operator.conditions import find
from digest_operator.metrics import OperatorMetrics
from digest_operator.reconcile import reconcile
from tests.support.samples import minimal
from tests.unit.operator.test_reconcile import UID, MemoryApi

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
FIVE_MIN = datetime.timedelta(minutes=5)


def report(time: str = "2026-11-28T11:55:00Z", count: int = 3, oldest: str | None = "2026-11-28T11:00:00Z",
           **extra: Any) -> dict[str, Any]:
    return {"v": 1, "pipeline": "default/demo", "queue": "digests", "time": time, "mode": "Active",
            "count": count, "oldestEnqueuedTime": oldest, "oldestAgeSeconds": 3300,
            "decisions": {"Requeue": 2, "Skip": 3}, "reasons": {}, "requeued": 2, "parked": 0, "left": 0,
            "failed": 0, "circuit": {"state": "Closed", "returned": 0, "threshold": 10}, "errors": [], **extra}


JOB_UID = "job-uid-1"
CRONJOB_UID = "uid-demo-dlq-monitor"  # what MemoryApi gives the applied CronJob demo-dlq-monitor


def owner(kind: str, uid: str, *, controller: bool = True) -> list[dict[str, Any]]:
    return [{"apiVersion": "batch/v1", "kind": kind, "name": "x", "uid": uid, "controller": controller}]


def pod(name: str, message: str | None, *, pipeline: str = "demo", container: str = "dlq-monitor",
        job: str | None = JOB_UID, finished: str | None = "2026-11-28T11:59:59Z") -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": 0, "message": message}
    if finished is not None:
        terminated["finishedAt"] = finished
    state = {"terminated": terminated} if message is not None else {"running": {}}
    metadata: dict[str, Any] = {"name": name, "namespace": "default", "labels": {
        "digest.dev/pipeline": pipeline, "app.kubernetes.io/component": "dlq-monitor"}}
    if job is not None:
        metadata["ownerReferences"] = owner("Job", job)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "status": {"containerStatuses": [{"name": container, "state": state}]}}


def job(name: str, uid: str, cronjob: str | None = CRONJOB_UID, *, pipeline: str = "demo") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid, "labels": {
        "digest.dev/pipeline": pipeline, "app.kubernetes.io/component": "dlq-monitor"}}
    if cronjob is not None:
        metadata["ownerReferences"] = owner("CronJob", cronjob)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata}


def test_the_newest_parseable_report_wins() -> None:
    pods = [pod("a", json.dumps(report(time="2026-11-28T11:50:00Z", count=9))),
            pod("b", json.dumps(report(count=3))), pod("c", "not json"), pod("d", None),
            pod("e", json.dumps({"v": 99, "time": "2026-11-28T11:59:00Z"})),
            pod("f", json.dumps(report(time="2026-11-28T11:58:00Z")), container="other")]
    found = deadletter.latest_report(pods, {JOB_UID})
    assert found is not None and found[0] == "b" and found[1]["count"] == 3
    assert deadletter.latest_report([pod("x", None)], {JOB_UID}) is None


def test_only_jobs_controlled_by_the_pipelines_cronjob_count() -> None:
    jobs = [job("mine", "j1"), job("foreign", "j2", cronjob="someone-elses-cronjob"), job("bare", "j3", None),
            {**job("not-controller", "j4"), "metadata": {**job("x", "j4")["metadata"],
                                                          "ownerReferences": owner("CronJob", CRONJOB_UID,
                                                                                   controller=False)}}]
    assert deadletter.monitor_jobs(jobs, CRONJOB_UID) == {"j1"}


def test_a_report_needs_a_pod_of_one_of_the_monitor_jobs() -> None:
    """Labels alone prove nothing: a pod anyone created with the pipeline's labels is ignored."""
    genuine = pod("genuine", json.dumps(report(count=3)))
    forged = [pod("no-owner", json.dumps(report(time="2026-11-28T11:59:00Z", count=0)), job=None),
              pod("other-job", json.dumps(report(time="2026-11-28T11:59:00Z", count=0)), job="j-other")]
    found = deadletter.latest_report([genuine, *forged], {JOB_UID})
    assert found is not None and (found[0], found[1]["count"]) == ("genuine", 3)
    assert deadletter.latest_report(forged, {JOB_UID}) is None
    assert deadletter.latest_report([genuine], set()) is None


def test_a_report_time_is_never_later_than_the_container_finished() -> None:
    """A report dated in the future (clock skew or forgery) counts as of `finishedAt`: it cannot outrank the
    reports that follow it, and a container without `finishedAt` is not trusted."""
    future = pod("future", json.dumps(report(time="2030-01-01T00:00:00Z", count=0)), finished="2026-11-28T11:50:00Z")
    later = pod("later", json.dumps(report(time="2026-11-28T11:55:00Z", count=5)), finished="2026-11-28T11:55:01Z")
    found = deadletter.latest_report([future, later], {JOB_UID})
    assert found is not None and (found[0], found[1]["count"]) == ("later", 5)
    alone = deadletter.latest_report([future], {JOB_UID})
    assert alone is not None and alone[1]["time"] == "2026-11-28T11:50:00Z"
    status = deadletter.status_from_report(None, alone)
    assert status is not None and status["lastCheckedTime"] == "2026-11-28T11:50:00Z"
    unfinished = pod("unfinished", json.dumps(report()), finished=None)
    assert deadletter.latest_report([unfinished], {JOB_UID}) is None


def test_status_from_report_and_staleness() -> None:
    status = deadletter.status_from_report(None, ("pod-b", report()))
    assert status == {
        "count": 3, "oldestEnqueuedTime": "2026-11-28T11:00:00Z", "lastCheckedTime": "2026-11-28T11:55:00Z",
        "circuit": "Closed",
        "lastRun": {"time": "2026-11-28T11:55:00Z", "pod": "pod-b", "mode": "Active",
                    "decisions": {"Requeue": 2, "Skip": 3}, "requeued": 2, "parked": 0, "left": 0, "failed": 0},
    }
    older = ("pod-a", report(time="2026-11-28T11:00:00Z", count=99))
    assert deadletter.status_from_report(status, older) is status  # an older report never overwrites
    assert deadletter.status_from_report(status, None) is status
    garbage = deadletter.status_from_report(None, ("p", report(count=-4, requeued="x", decisions=[1])))
    assert garbage is not None and garbage["count"] == 0 and garbage["lastRun"]["requeued"] == 0


def test_the_count_source_is_kept_when_it_is_one_the_monitor_uses() -> None:
    managed = deadletter.status_from_report(None, ("p", report(countSource="management")))
    assert managed is not None and managed["countSource"] == "management"
    forged = deadletter.status_from_report(None, ("p", report(countSource="<script>")))
    assert forged is not None and "countSource" not in forged


def test_dead_letter_clear_condition() -> None:
    unknown = deadletter.condition(None, FIVE_MIN, "5m", NOW)
    assert (unknown.status, unknown.reason) == ("Unknown", "NoReport")
    empty = deadletter.condition({"count": 0}, FIVE_MIN, "5m", NOW)
    assert (empty.status, empty.reason) == ("True", "Empty")
    recent = deadletter.condition({"count": 2, "oldestEnqueuedTime": "2026-11-28T11:58:00Z"}, FIVE_MIN, "5m", NOW)
    assert (recent.status, recent.reason) == ("True", "WithinAlertAfter")
    pending = deadletter.condition({"count": 2, "oldestEnqueuedTime": "2026-11-28T11:00:00Z"}, FIVE_MIN, "5m", NOW)
    assert (pending.status, pending.reason) == ("False", "DeadLettersPending")
    assert "2 message(s)" in pending.message and "alertAfter 5m" in pending.message


def test_events_only_for_a_new_run() -> None:
    first = deadletter.status_from_report(None, ("p1", report(parked=1, failed=2, errors=["connection lost"])))
    reasons = [(e.type, e.reason) for e in deadletter.events(None, first)]
    assert reasons == [("Normal", "DeadLettersRequeued"), ("Warning", "DeadLettersParked"),
                       ("Warning", "DeadLetterMonitorIncomplete")]
    assert deadletter.events(first, first) == []
    opened = deadletter.status_from_report(first, ("p2", report(
        time="2026-11-28T11:59:00Z", requeued=0, circuit={"state": "Open", "returned": 12, "threshold": 5})))
    assert [e.reason for e in deadletter.events(first, opened)] == ["RequeueCircuitOpen"]
    quiet = deadletter.status_from_report(first, ("p3", report(time="2026-11-28T11:59:30Z", requeued=0)))
    assert deadletter.events(first, quiet) == []


def test_metrics_export_the_report_and_count_each_run_once() -> None:
    metrics = OperatorMetrics()
    status = deadletter.status_from_report(None, ("p1", report(parked=1)))
    for _ in range(3):
        metrics.set_dead_letter("default", "demo", status)
    labels = {"pipeline_namespace": "default", "pipeline": "demo"}

    def value(name: str, **extra: str) -> float | None:
        return metrics.registry.get_sample_value(name, {**labels, **extra})

    assert value("digest_pipeline_dead_letter_handled_total", outcome="requeued") == 2
    assert value("digest_pipeline_dead_letter_last_run_messages", outcome="parked") == 1
    assert value("digest_pipeline_dead_letter_circuit_open") == 0
    oldest = datetime.datetime(2026, 11, 28, 11, 0, tzinfo=datetime.UTC).timestamp()
    assert value("digest_pipeline_dead_letter_oldest_enqueued_timestamp_seconds") == oldest
    metrics.forget_pipeline("default", "demo")
    assert value("digest_pipeline_dead_letter_last_run_messages", outcome="parked") is None


async def test_reconcile_records_the_report_and_is_idempotent() -> None:
    api = MemoryApi()
    body = minimal()
    body["metadata"].update(uid=UID, generation=1)
    api.objects[("batch/v1", "jobs", "default", "demo-dlq-monitor-1")] = job("demo-dlq-monitor-1", JOB_UID)
    api.objects[("v1", "pods", "default", "demo-dlq-monitor-1")] = pod("demo-dlq-monitor-1", json.dumps(report()))
    api.objects[("v1", "pods", "default", "other-dlq-monitor-1")] = pod(
        "other-dlq-monitor-1", json.dumps(report(count=50, time="2026-11-28T11:59:00Z")), pipeline="other")
    # a pod with the pipeline's labels and a newer report, owned by a Job that no CronJob of ours controls
    api.objects[("batch/v1", "jobs", "default", "planted")] = job("planted", "j-planted", cronjob="elsewhere")
    api.objects[("v1", "pods", "default", "planted-1")] = pod(
        "planted-1", json.dumps(report(count=0, time="2026-11-28T11:59:30Z")), job="j-planted")
    outcome = await reconcile(body, api, "2026-11-28T12:00:00Z")
    dead = outcome.status["deadLetter"]
    assert dead["count"] == 3 and dead["lastRun"]["pod"] == "demo-dlq-monitor-1"
    clear = find(outcome.status["conditions"], "DeadLetterClear")
    assert clear is not None and (clear["status"], clear["reason"]) == ("False", "DeadLettersPending")
    assert {e.reason for e in outcome.events} >= {"DeadLettersRequeued", "DeadLettersPending"}
    again = await reconcile({**body, "status": outcome.status}, api, "2026-11-28T12:00:30Z")
    assert again.status_patch == {} and again.events == []


async def test_no_report_without_a_cronjob_the_pipeline_controls() -> None:
    """A CronJob of the monitor's name that the pipeline does not control (a conflict) vouches for nothing."""
    api = MemoryApi()
    body = minimal()
    body["metadata"].update(uid=UID, generation=1)
    api.objects[("batch/v1", "cronjobs", "default", "demo-dlq-monitor")] = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "demo-dlq-monitor", "namespace": "default", "uid": "squatter"}}
    api.objects[("batch/v1", "jobs", "default", "demo-dlq-monitor-1")] = job("demo-dlq-monitor-1", JOB_UID,
                                                                            cronjob="squatter")
    api.objects[("v1", "pods", "default", "demo-dlq-monitor-1")] = pod("demo-dlq-monitor-1", json.dumps(report()))
    outcome = await reconcile(body, api, "2026-11-28T12:00:00Z")
    assert "deadLetter" not in outcome.status
