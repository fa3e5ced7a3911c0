"""One level-triggered, idempotent reconcile: parse → observe children → render → apply what differs → status.

No decorators and no client construction here: Kopf wiring lives in `handlers`, API I/O in `k8s`. With a `cache`
(the operator's watch caches, `cache.Cache`) children, pods and Jobs are read from it: a reconcile with nothing to
change asks the API nothing. The cache holds only objects with the operator's labels, so a child it lacks is read
from the API before it is applied (a same-named object someone else made must not be taken over); a stale entry
costs at most an idempotent apply, a delete of an object since replaced fails its uid precondition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any, Protocol

from digest_api.durations import parse_duration
from digest_api.parse import Pipeline, SpecError, parse_pipeline
from digest_operator import deadletter, imagepin, pinning, rollouts
from digest_operator import status as status_mod
from digest_operator.drift import in_sync, merge_patch
from digest_operator.k8s import ApiError
from digest_operator.pinning import Backoff
from digest_operator.render import ChildRef, possible_children, render_children
from digest_operator.render.meta import APPLIED_HASH, MANAGED_BY
from digest_operator.rollout import RolloutState, rollout_state
from digest_operator.status import Change, Event, Observation


class Api(Protocol):
    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        ...

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        ...

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> list[dict[str, Any]]:
        ...


class Reader(Protocol):
    """Reads of children, pods and Jobs (the watch cache, or the API itself)."""

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> list[dict[str, Any]]:
        ...


class PodLister(Protocol):
    async def list(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str,
    ) -> list[dict[str, Any]]:
        ...


@dataclass
class Outcome:
    status: dict[str, Any]
    status_patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    invalid: SpecError | None = None
    failed: bool = False
    """Some child could not be applied for a non-transient reason: retry later, after writing status."""
    retry_in: float | None = None
    """The image could not be resolved: try again after this many seconds."""

    @property
    def ready(self) -> str:
        for cond in self.status.get("conditions", []):
            if cond.get("type") == "Ready":
                return str(cond.get("status"))
        return "Unknown"


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )


def _applied_hash(obj: dict[str, Any]) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(APPLIED_HASH)
    return str(value) if value is not None else None


async def _observe(api: Reader, namespace: str, children: list[ChildRef]) \
        -> dict[ChildRef, dict[str, Any] | None]:
    lives = await asyncio.gather(*(api.get(c.api_version, c.plural, namespace, c.name) for c in children))
    return dict(zip(children, lives, strict=True))


@dataclass
class _Children:
    """The children of one reconcile: what is live, and what this reconcile applied."""

    api: Api
    pipeline: Pipeline
    observation: Observation
    live: dict[ChildRef, dict[str, Any] | None]
    by_kind: dict[str, ChildRef]
    desired_refs: set[ChildRef] = field(default_factory=set)
    deployment: dict[str, Any] | None = None
    cached: bool = False
    """`live` comes from the watch cache, which holds only objects with the operator's labels."""

    async def _confirm_absent(self, refs: list[ChildRef]) -> None:
        """Read from the API the children the cache lacks (all at once, before any write): the cache holds only
        objects with the operator's labels, and a same-named object without them must be seen, not taken over."""
        missing = [ref for ref in refs if self.live[ref] is None]
        found = await asyncio.gather(*(self.api.get(ref.api_version, ref.plural, self.pipeline.namespace, ref.name)
                                       for ref in missing))
        for ref, obj in zip(missing, found, strict=True):
            self.live[ref] = obj
            if ref.kind == "Deployment" and obj is not None:
                self.deployment = obj

    async def apply(self, desired: list[dict[str, Any]]) -> None:
        observation, uid = self.observation, self.pipeline.uid
        if self.cached:
            await self._confirm_absent([self.by_kind[obj["kind"]] for obj in desired])
        for obj in desired:
            ref = self.by_kind[obj["kind"]]
            self.desired_refs.add(ref)
            current = self.live[ref]
            if current is not None and not owned_by(current, uid):
                conflict = f"{ref.kind} {ref.name} exists and is not controlled by this pipeline; delete or rename it"
                if conflict not in observation.conflicts:
                    observation.conflicts.append(conflict)
                if ref.kind == "Deployment":
                    self.deployment = None
                continue
            if current is not None and in_sync(obj, current):
                continue
            try:
                applied = await self.api.apply(obj, ref.plural)
            except ApiError as exc:
                if exc.transient:
                    raise
                observation.failures.append(_apply_failure(ref, exc))
                continue
            self.live[ref] = applied
            if ref.kind == "Deployment":
                self.deployment = applied
            if current is None:
                action = "Created"
            elif _applied_hash(current) != _applied_hash(obj):
                action = "Updated"  # rendered from another spec or operator version
            else:
                action = "DriftRepaired"  # same rendering, but someone changed owned fields
            observation.changes.append(Change(action, ref.kind, ref.name))

    async def prune(self, children: list[ChildRef]) -> None:
        for ref in children:
            current = self.live[ref]
            if ref in self.desired_refs or current is None or not owned_by(current, self.pipeline.uid):
                continue
            try:
                await self.api.delete(ref.api_version, ref.plural, self.pipeline.namespace, ref.name,
                                      current["metadata"]["uid"])
            except ApiError as exc:
                if exc.status != 409:
                    raise
                continue  # its uid precondition failed: a newer namesake, not the child that was read (stale)
            self.observation.changes.append(Change("Pruned", ref.kind, ref.name))
            if ref.kind == "Deployment":
                self.deployment = None


async def _observe_rollout(deployment: dict[str, Any], pods: PodLister | None) -> RolloutState:
    """`kubectl rollout status` facts, plus: new pods crash-looping fail the rollout before its deadline."""
    state = rollout_state(deployment)
    match = rollouts.selector(deployment)
    if state.phase != "Progressing" or pods is None or match is None:
        return state
    namespace = deployment.get("metadata", {}).get("namespace")
    try:
        listed = await pods.list("v1", "pods", namespace, match)
    except ApiError as exc:
        if exc.transient:
            raise
        return state  # e.g. no RBAC to list pods: the progress deadline still catches a failed rollout
    why = rollouts.crash_looping(listed, rollouts.worker_image(deployment))
    if why is None:
        return state
    return dataclasses.replace(state, phase="Failed", message=f"new pods fail: {why}", reason="NewPodsFailing")


async def reconcile(
    body: dict[str, Any], api: Api, now: str, resolver: imagepin.Resolver | None = None, backoff: Backoff | None = None,
    pods: PodLister | None = None, cache: Reader | None = None,
) -> Outcome:
    """Converge one pipeline's children and compute its status. Raises k8s.ApiError on API failures.

    `api` writes (and reads what must be fresh); `cache`, when given, answers the reads of children and Jobs."""
    meta = body.get("metadata", {})
    old_status: dict[str, Any] = dict(body.get("status") or {})
    generation = meta.get("generation")
    observation = Observation(generation=generation, requested_image=(body.get("spec") or {}).get("image"))
    invalid: SpecError | None = None
    try:
        pipeline = parse_pipeline(body)
    except SpecError as exc:
        invalid = exc
        observation.invalid = exc.problems
    else:
        children = possible_children(pipeline.name)
        by_kind = {c.kind: c for c in children}
        reads: Reader = cache if cache is not None else api
        live = await _observe(reads, pipeline.namespace, children)
        state = _Children(api, pipeline, observation, live, by_kind, deployment=live[by_kind["Deployment"]],
                          cached=cache is not None)
        target = await imagepin.pin(api, pipeline, body, old_status, observation, state.deployment, resolver,
                            backoff or pinning.Backoff(), now)
        recorded = rollouts.recorded_rollback(old_status.get("rollback"), state.deployment)
        rollback = rollouts.rollback_in_effect(recorded, generation)
        if rollback is not None and target is not None and target.digest == rollback.failed.digest:
            target = rollback.restored  # the failed digest is not tried again until the spec changes
        else:
            rollback = None
        observation.rollback = rollback
        observation.image = target
        running = state.deployment if state.deployment is not None and owned_by(state.deployment, pipeline.uid) \
            else None
        await state.apply(_with_rollback(render_children(pipeline, target), rollback))
        await state.prune(children)
        limit = pipeline.spec.rollout.history_limit
        history = list(old_status.get("history") or [])
        deployment = state.deployment if by_kind["Deployment"] in state.desired_refs else None
        if deployment is not None:
            old_record, history = await _finish_replaced(old_status.get("rollout"), running, deployment, history,
                                                         limit, pods, now)
            observation.rollout = await _observe_rollout(deployment, pods)
            record = rollouts.track(old_record, deployment, observation.rollout, now)
            history = rollouts.record_history(history, record, limit)
            if rollback is None:
                rollback = rollouts.should_roll_back(record, history, auto_rollback=pipeline.spec.rollout.auto_rollback,
                                                     generation=generation, now=now)
                if rollback is not None:
                    observation.rollback = rollback
                    observation.image = rollback.restored
                    await state.apply(_with_rollback(render_children(pipeline, rollback.restored), rollback))
                    if state.deployment is not None:
                        observation.rollout = rollout_state(state.deployment)
                        record = rollouts.track(record, state.deployment, observation.rollout, now)
                        history = rollouts.record_history(history, record, limit)
            if rollback is not None:
                history = rollouts.mark_rolled_back(history, rollback)
            observation.rollout_record = record
        observation.history = history[:limit]
        cronjob = state.live[by_kind["CronJob"]]
        monitor = cronjob if cronjob is not None and owned_by(cronjob, pipeline.uid) else None
        await _observe_dead_letters(reads, pipeline, monitor, old_status, observation, now, cached=cache is not None)

    new_status = status_mod.compute(old_status, observation, now)
    return Outcome(
        status=new_status,
        status_patch=_status_patch(old_status, new_status),
        events=[*observation.notes, *status_mod.events(old_status, new_status, observation)],
        changes=observation.changes,
        invalid=invalid,
        failed=bool(observation.failures),
        retry_in=observation.retry_in,
    )


async def _finish_replaced(
    old: dict[str, Any] | None, running: dict[str, Any] | None, deployment: dict[str, Any],
    history: list[dict[str, Any]], limit: int, pods: PodLister | None, now: str,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The tracked revision's record and the history, updated from the Deployment as it ran before this reconcile
    replaced its template.

    A rollout can complete (or fail) and the tag move (Track, a resolution request, a spec change) before any
    reconcile reads the Deployment in between: the reconcile that replaces the template is the only one that sees
    how the running revision ended. Without this the revision would read Superseded, and automatic rollback would
    find no good digest to return to.
    """
    if (old is None or running is None or old.get("templateHash") != rollouts.template_hash(running)
            or rollouts.template_hash(running) == rollouts.template_hash(deployment)):
        return old, history  # not replaced here (or not the tracked revision): the usual tracking covers it
    last = _as_replaced(running, deployment)
    record = rollouts.track(old, last, await _observe_rollout(last, pods), now)
    return record, rollouts.record_history(history, record, limit)


def _as_replaced(running: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """The running revision with the newest status known: the one in the apply response, while it still describes
    the old template (its `observedGeneration` predates the new template's generation).

    The Deployment was read at the start of the reconcile; its rollout can complete while the registry is asked,
    before the new template is applied.
    """
    status = applied.get("status") or {}
    observed, generation = status.get("observedGeneration"), applied.get("metadata", {}).get("generation")
    if observed is None or generation is None or int(observed) >= int(generation):
        return running  # the status already describes the new template (or nothing): keep what was read
    spec = dict(running.get("spec") or {})
    if "replicas" in (applied.get("spec") or {}):
        spec["replicas"] = applied["spec"]["replicas"]
    meta = running.get("metadata") or {}
    return {**running, "metadata": {**meta, "generation": max(int(observed), int(meta.get("generation") or 0))},
            "spec": spec, "status": status}


def _with_rollback(objects: list[dict[str, Any]], rollback: rollouts.Rollback | None) -> list[dict[str, Any]]:
    if rollback is None:
        return objects
    return [rollouts.annotate(o, rollback) if o["kind"] == "Deployment" else o for o in objects]


# Labels every Job and pod of the DLQ monitor carries (render.meta.labels) that the watch caches select by (Jobs by
# managed-by, pods by name): a list narrowed by them is one the caches can answer.
_CACHED_MONITOR_LABELS = f"app.kubernetes.io/name=digest-worker,app.kubernetes.io/managed-by={MANAGED_BY}"


async def _observe_dead_letters(api: Reader, pipeline: Pipeline, cronjob: dict[str, Any] | None,
                                old_status: dict[str, Any], observation: Observation, now: str, *,
                                cached: bool = False) -> None:
    """status.deadLetter from the newest DLQ monitor report: the termination message of a finished pod of a Job
    of the pipeline's own monitor CronJob (`cronjob`; None when there is none this pipeline controls)."""
    old = old_status.get("deadLetter")
    found = None
    if cronjob is not None:
        selector = deadletter.pod_selector(pipeline.name)
        if cached:
            selector = f"{_CACHED_MONITOR_LABELS},{selector}"
        try:
            jobs = await api.list("batch/v1", "jobs", pipeline.namespace, selector)
            pods = await api.list("v1", "pods", pipeline.namespace, selector) if jobs else []
        except ApiError as exc:
            if exc.transient:
                raise
            jobs, pods = [], []  # e.g. no RBAC to list jobs or pods: keep what the status says
        found = deadletter.latest_report(pods, deadletter.monitor_jobs(jobs, str(cronjob["metadata"]["uid"])))
    new = deadletter.status_from_report(old, found)
    observation.dead_letter = new
    alert_after = pipeline.spec.dead_letter.alert_after
    now_time = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
    observation.dead_letter_condition = deadletter.condition(new, parse_duration(alert_after), alert_after, now_time)
    observation.dead_letter_events = deadletter.events(old, new)


_CRD_OWNERS = {  # child kind → (who installs its CRD, what else helps)
    "ScaledObject": ("KEDA", ""),
    "TriggerAuthentication": ("KEDA", ""),
    "PodMonitor": ("Prometheus Operator", " Otherwise set spec.monitoring.enabled: false"),
    "PrometheusRule": ("Prometheus Operator", " Otherwise set spec.monitoring.enabled: false"),
}


def _apply_failure(ref: ChildRef, exc: ApiError) -> str:
    """The ApplyFailed message for one child. A kind the API server does not serve (its CRD is missing or not
    established yet) is named with its CRD, instead of the server's bare `404 page not found`."""
    prefix = f"applying {ref.kind} {ref.name} failed"
    if not exc.not_served:
        return f"{prefix}: {exc.status} {exc.reason}: {exc.message}"
    text = f"{prefix}: the API server does not serve {ref.api_version} {ref.kind}"
    if ref.kind in _CRD_OWNERS:
        owner, otherwise = _CRD_OWNERS[ref.kind]
        group = ref.api_version.rpartition("/")[0]
        text += f": is the {owner} CRD {ref.plural}.{group} installed?{otherwise}"
    return text


def _status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Kopf keeps its own `status.kopf` only when progress is stored in status; never touch it."""
    return merge_patch({k: v for k, v in old.items() if k != "kopf"}, new)
