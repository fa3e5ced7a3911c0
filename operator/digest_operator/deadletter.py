"""Pure: the DLQ monitor's report (its pod's termination message) → `status.deadLetter`, the `DeadLetterClear`
condition, Events and metric values.

The monitor CronJob's pods carry the pipeline's labels; the newest terminated `dlq-monitor` container holds the
latest report. Labels alone prove nothing (any pod creator in the namespace can set them), so a report counts only
from a pod controlled by a Job that the pipeline's own CronJob controls, and its time is never later than the
container's `finishedAt` (a report from the future would otherwise freeze the status and the alert). Only the
report's time changes `lastRun`, so an unchanged report writes nothing and posts no Event.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from digest_operator.conditions import DEAD_LETTER_CLEAR, Condition
from digest_operator.render.dlq_monitor import COMPONENT
from digest_operator.render.meta import PIPELINE_LABEL
from digest_operator.status import Event

CONTAINER = "dlq-monitor"


def pod_selector(pipeline: str) -> str:
    return f"{PIPELINE_LABEL}={pipeline},app.kubernetes.io/component={COMPONENT}"


def _controller_uid(obj: dict[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") is True and ref.get("kind") == kind:
            uid = ref.get("uid")
            return uid if isinstance(uid, str) and uid else None
    return None


def monitor_jobs(jobs: list[dict[str, Any]], cronjob_uid: str) -> set[str]:
    """UIDs of the Jobs the pipeline's CronJob controls."""
    return {str(job["metadata"]["uid"]) for job in jobs
            if (job.get("metadata") or {}).get("uid") and _controller_uid(job, "CronJob") == cronjob_uid}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            state = (status.get("state") or {}).get("terminated")
            return state if isinstance(state, dict) else None
    return None


def latest_report(pods: list[dict[str, Any]], jobs: set[str]) -> tuple[str, dict[str, Any]] | None:
    """(pod name, report) of the newest finished monitor pod with a parseable report, among the pods controlled by
    one of `jobs` (see `monitor_jobs`). The report's `time` is clamped to the container's `finishedAt`; a pod whose
    container has no `finishedAt` is not trusted."""
    candidates = []
    for pod in pods:
        state = _terminated(pod)
        if state is None or not state.get("message") or _controller_uid(pod, "Job") not in jobs:
            continue
        finished = _parse_time(state.get("finishedAt"))
        try:
            report = json.loads(state["message"])
        except ValueError:
            continue
        if finished is None or not isinstance(report, dict) or report.get("v") != 1:
            continue
        said = _parse_time(report.get("time"))
        if said is None:
            continue
        when = min(said, finished)
        candidates.append((when, str(pod.get("metadata", {}).get("name", "")), {**report, "time": _iso(when)}))
    if not candidates:
        return None
    _, pod_name, report = max(candidates, key=lambda c: (c[0], c[1]))
    return pod_name, report


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _count(report: dict[str, Any], key: str) -> int:
    value = report.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def status_from_report(old: dict[str, Any] | None, found: tuple[str, dict[str, Any]] | None) -> dict[str, Any] | None:
    """The new `status.deadLetter`: from the newest report, or the old one when there is nothing newer."""
    if found is None:
        return old
    pod, report = found
    report_time = _parse_time(report.get("time"))
    checked = _iso(report_time)
    previous = _parse_time((old or {}).get("lastCheckedTime"))
    if old and previous is not None and report_time is not None:
        current = report_time.replace(microsecond=0)
        same_pod = (old.get("lastRun") or {}).get("pod") == pod
        if previous > current or (previous == current and same_pod):
            return old  # an older or the same report (e.g. a newer pod was already garbage-collected)
    circuit = (report.get("circuit") or {}).get("state")
    decisions = report.get("decisions")
    if not isinstance(decisions, dict):
        decisions = {}
    run: dict[str, Any] = {
        "time": checked, "pod": pod, "mode": report.get("mode") if report.get("mode") in ("Active", "DryRun") else None,
        "decisions": {str(k): int(v) for k, v in decisions.items() if isinstance(v, int) and v >= 0},
        "requeued": _count(report, "requeued"), "parked": _count(report, "parked"), "left": _count(report, "left"),
        "failed": _count(report, "failed"),
        "errors": [str(e)[:200] for e in (report.get("errors") or [])][:5],
    }
    result: dict[str, Any] = {
        "count": _count(report, "count"),
        "countSource": report.get("countSource") if report.get("countSource") in ("management", "peek") else None,
        "oldestEnqueuedTime": _iso(_parse_time(report.get("oldestEnqueuedTime"))),
        "lastCheckedTime": checked,
        "circuit": circuit if circuit in ("Closed", "Open") else None,
        "lastRun": {k: v for k, v in run.items() if v not in (None, [], {})},
    }
    return {k: v for k, v in result.items() if v is not None}


def condition(dead_letter: dict[str, Any] | None, alert_after: datetime.timedelta, alert_text: str,
              now: datetime.datetime) -> Condition:
    """False while the DLQ holds messages older than `alertAfter` (the PrometheusRule's `for`)."""
    if not dead_letter or dead_letter.get("count") is None:
        return Condition(DEAD_LETTER_CLEAR, "Unknown", "NoReport", "the DLQ monitor has not reported yet")
    count = int(dead_letter["count"])
    if count == 0:
        return Condition(DEAD_LETTER_CLEAR, "True", "Empty", "the dead-letter queue is empty")
    oldest = _parse_time(dead_letter.get("oldestEnqueuedTime"))
    since = f"since {_iso(oldest)}" if oldest else "(enqueued time unknown)"
    if oldest is None or now - oldest > alert_after:
        return Condition(DEAD_LETTER_CLEAR, "False", "DeadLettersPending",
                         f"{count} message(s) in the dead-letter queue, the oldest {since}, longer than alertAfter "
                         f"{alert_text}; inspect with: digestctl dlq stats")
    return Condition(DEAD_LETTER_CLEAR, "True", "WithinAlertAfter",
                     f"{count} message(s) in the dead-letter queue, none older than alertAfter {alert_text}")


def run_id(dead_letter: dict[str, Any] | None) -> tuple[str, str] | None:
    """Identity of the run a `status.deadLetter` comes from: (report time, pod)."""
    run = (dead_letter or {}).get("lastRun") or {}
    return (str(run["time"]), str(run.get("pod"))) if run.get("time") else None


def events(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Event]:
    """Events for a new monitor run that requeued, parked, hit the circuit breaker or failed."""
    if not new or not new.get("lastRun"):
        return []
    run = new["lastRun"]
    if old and run_id(old) == run_id(new):
        return []
    result: list[Event] = []
    dry = " (DryRun: decisions only)" if run.get("mode") == "DryRun" else ""
    if run.get("requeued"):
        result.append(Event("Normal", "DeadLettersRequeued",
                            f"requeued {run['requeued']} dead-lettered message(s); {new.get('count', 0)} left"))
    if run.get("parked"):
        result.append(Event("Warning", "DeadLettersParked", f"parked {run['parked']} dead-lettered message(s)"))
    if new.get("circuit") == "Open":
        result.append(Event("Warning", "RequeueCircuitOpen",
                            "automatic requeue paused: requeued messages keep returning to the dead-letter "
                            f"queue{dry}"))
    if run.get("failed") or run.get("errors") or run.get("left"):
        detail = "; ".join(run.get("errors") or [])
        result.append(Event("Warning", "DeadLetterMonitorIncomplete",
                            f"{run.get('failed', 0)} failed, {run.get('left', 0)} left in the dead-letter queue"
                            + (f": {detail}" if detail else "")))
    return result
