"""One level-triggered, idempotent reconcile: parse → observe children → render → apply what differs → status.

No decorators and no client construction here: Kopf wiring lives in `handlers`, API I/O in `k8s`.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from typing import Any, Protocol

from digest_operator import deadletter
from digest_operator import status as status_mod
from digest_operator.api.imageref import ImageRef, parse_image
from digest_operator.api.parse import Pipeline, SpecError, parse_pipeline
from digest_operator.drift import in_sync, merge_patch
from digest_operator.k8s import ApiError
from digest_operator.render import ChildRef, possible_children, render_children
from digest_operator.render.meta import APPLIED_HASH
from digest_operator.rollout import rollout_state
from digest_operator.status import Change, Event, Observation
from digest_worker.dlq.select import parse_duration


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


@dataclass
class Outcome:
    status: dict[str, Any]
    status_patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    invalid: SpecError | None = None
    failed: bool = False
    """Some child could not be applied for a non-transient reason: retry later, after writing status."""

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


def _pinned(reference: str | None) -> ImageRef | None:
    if not reference:
        return None
    try:
        image = parse_image(reference)
    except ValueError:
        return None
    return image if image.pinned else None


def last_good_image(deployment: dict[str, Any] | None, old_status: dict[str, Any]) -> ImageRef | None:
    """The pinned image currently running (from the live Deployment), else the one recorded in status."""
    if deployment is not None:
        for container in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if container.get("name") == "worker":
                image = _pinned(container.get("image"))
                if image is not None:
                    return image
    return _pinned((old_status.get("image") or {}).get("ref"))


async def _observe(api: Api, namespace: str, children: list[ChildRef]) -> dict[ChildRef, dict[str, Any] | None]:
    lives = await asyncio.gather(*(api.get(c.api_version, c.plural, namespace, c.name) for c in children))
    return dict(zip(children, lives, strict=True))


async def reconcile(body: dict[str, Any], api: Api, now: str) -> Outcome:
    """Converge one pipeline's children and compute its status. Raises k8s.ApiError on API failures."""
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
        namespace = pipeline.namespace
        children = possible_children(pipeline.name)
        live = await _observe(api, namespace, children)
        by_kind = {c.kind: c for c in children}

        requested = pipeline.image
        if requested.pinned:
            observation.image = requested
        else:
            observation.image_refused = True
            observation.image = last_good_image(live[by_kind["Deployment"]], old_status)

        desired = render_children(pipeline, observation.image)
        desired_refs: set[ChildRef] = set()
        deployment = live[by_kind["Deployment"]]
        for obj in desired:
            ref = by_kind[obj["kind"]]
            desired_refs.add(ref)
            current = live[ref]
            if current is not None and not owned_by(current, pipeline.uid):
                observation.conflicts.append(
                    f"{ref.kind} {ref.name} exists and is not controlled by this pipeline; delete or rename it"
                )
                if ref.kind == "Deployment":
                    deployment = None
                continue
            if current is not None and in_sync(obj, current):
                continue
            try:
                applied = await api.apply(obj, ref.plural)
            except ApiError as exc:
                if exc.transient:
                    raise
                observation.failures.append(_apply_failure(ref, exc))
                continue
            if ref.kind == "Deployment":
                deployment = applied
            if current is None:
                action = "Created"
            elif _applied_hash(current) != _applied_hash(obj):
                action = "Updated"  # rendered from another spec or operator version
            else:
                action = "DriftRepaired"  # same rendering, but someone changed owned fields
            observation.changes.append(Change(action, ref.kind, ref.name))
        for ref in children:
            current = live[ref]
            if ref in desired_refs or current is None or not owned_by(current, pipeline.uid):
                continue
            await api.delete(ref.api_version, ref.plural, namespace, ref.name, current["metadata"]["uid"])
            observation.changes.append(Change("Pruned", ref.kind, ref.name))
            if ref.kind == "Deployment":
                deployment = None
        if deployment is not None and by_kind["Deployment"] in desired_refs:
            observation.rollout = rollout_state(deployment)
        await _observe_dead_letters(api, pipeline, old_status, observation, now)

    new_status = status_mod.compute(old_status, observation, now)
    return Outcome(
        status=new_status,
        status_patch=_status_patch(old_status, new_status),
        events=status_mod.events(old_status, new_status, observation),
        changes=observation.changes,
        invalid=invalid,
        failed=bool(observation.failures),
    )


async def _observe_dead_letters(api: Api, pipeline: Pipeline, old_status: dict[str, Any], observation: Observation,
                                now: str) -> None:
    """status.deadLetter from the newest DLQ monitor report (a finished monitor pod's termination message)."""
    old = old_status.get("deadLetter")
    try:
        pods = await api.list("v1", "pods", pipeline.namespace, deadletter.pod_selector(pipeline.name))
    except ApiError as exc:
        if exc.transient:
            raise
        pods = []  # e.g. no RBAC to list pods: keep what the status says
    new = deadletter.status_from_report(old, deadletter.latest_report(pods))
    observation.dead_letter = new
    alert_after = pipeline.spec.dead_letter.alert_after
    now_time = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
    observation.dead_letter_condition = deadletter.condition(new, parse_duration(alert_after), alert_after, now_time)
    observation.dead_letter_events = deadletter.events(old, new)


_MISSING_API_HINTS = {
    "ScaledObject": "is KEDA installed?",
    "TriggerAuthentication": "is KEDA installed?",
    "PodMonitor": "is the Prometheus Operator installed? Otherwise set spec.monitoring.enabled: false",
    "PrometheusRule": "is the Prometheus Operator installed? Otherwise set spec.monitoring.enabled: false",
}


def _apply_failure(ref: ChildRef, exc: ApiError) -> str:
    text = f"applying {ref.kind} {ref.name} failed: {exc.status} {exc.reason}: {exc.message}"
    if exc.status == 404 and ref.kind in _MISSING_API_HINTS:
        text += f" ({ref.api_version} is not served; {_MISSING_API_HINTS[ref.kind]})"
    return text


def _status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Kopf keeps its own `status.kopf` only when progress is stored in status; never touch it."""
    return merge_patch({k: v for k, v in old.items() if k != "kopf"}, new)
