"""Pure: the rollout record (`status.rollout`), the history (`status.history`) and the automatic rollback decision.

A rollout is one pod template of the worker Deployment: a new template hash starts a new revision. Its phase
comes from `rollout.rollout_state` (read like `kubectl rollout status`); once Complete it stays Complete (later
scaling is not a rollout).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from digest_api.imageref import ImageRef, parse_image
from digest_operator.rollout import RolloutState

WORKER_CONTAINER = "worker"


def template_hash(deployment: dict[str, Any]) -> str:
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def worker_image(deployment: dict[str, Any]) -> str | None:
    for container in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if container.get("name") == WORKER_CONTAINER:
            return str(container.get("image"))
    return None


def digest_of(reference: str | None) -> str | None:
    if not reference:
        return None
    try:
        return parse_image(reference).digest
    except ValueError:
        return None


CRASH_REASONS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                           "CreateContainerConfigError"})
"""Waiting reasons of a worker container that fail a rollout at once (without waiting for the deadline)."""


def selector(deployment: dict[str, Any]) -> str | None:
    """The Deployment's `matchLabels` as a label selector string."""
    labels = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


def crash_looping(pods: list[dict[str, Any]], image: str | None) -> str | None:
    """Why the new pods (those whose worker container runs `image`) cannot start, if they cannot."""
    for pod in pods:
        containers = {c.get("name"): c.get("image") for c in pod.get("spec", {}).get("containers", [])}
        if image is None or containers.get(WORKER_CONTAINER) != image:
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if status.get("name") == WORKER_CONTAINER and waiting.get("reason") in CRASH_REASONS:
                name = pod.get("metadata", {}).get("name")
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return (f"pod {name} is in {waiting['reason']} (restarts: {status.get('restartCount', 0)})"
                        f"{detail}")[:1024]
    return None


def track(old: dict[str, Any] | None, deployment: dict[str, Any], state: RolloutState, now: str) -> dict[str, Any]:
    """The new `status.rollout` for the live `deployment` in `state`.

    A rollout at zero replicas (KEDA scaled the worker to zero) completes without starting a pod: it is Complete
    but not `verified` until ready pods run it, and it can still fail when the worker first scales up.
    """
    digest_hash = template_hash(deployment)
    if old is None or old.get("templateHash") != digest_hash:
        image = worker_image(deployment)
        record: dict[str, Any] = {
            "revision": int((old or {}).get("revision") or 0) + 1, "image": image, "digest": digest_of(image),
            "phase": "Progressing", "startedTime": now, "templateHash": digest_hash,
        }
    else:
        record = dict(old)
    if record["phase"] == "Complete":
        if not record.get("verified"):
            if state.phase == "Complete" and state.ready_replicas > 0:
                record["verified"] = True
            elif state.phase == "Failed":  # the first scale-up of a rollout completed at zero replicas
                record.update(phase="Failed", message=state.message, finishedTime=now)
                record.pop("verified", None)
    else:
        record["phase"], record["message"] = state.phase, state.message
        if state.phase == "Progressing":
            record.pop("finishedTime", None)
        elif not record.get("finishedTime") or (old or {}).get("phase") != state.phase:
            record["finishedTime"] = now
        if state.phase == "Complete":
            record["verified"] = state.ready_replicas > 0
    return {k: v for k, v in record.items() if v is not None}


def record_history(
    history: list[dict[str, Any]], rollout: dict[str, Any], limit: int, *, result: str | None = None,
) -> list[dict[str, Any]]:
    """`history` with `rollout` upserted at the front (newest first), at most `limit` entries."""
    entry = {
        "revision": rollout["revision"], "image": rollout.get("image"), "digest": rollout.get("digest"),
        "result": result or rollout["phase"], "startedTime": rollout.get("startedTime"),
        "finishedTime": rollout.get("finishedTime"), "verified": rollout.get("verified"),
    }
    previous = next((h for h in history if h.get("revision") == rollout["revision"]), None)
    if previous is not None and previous.get("result") == "RolledBack" and result is None:
        entry["result"] = "RolledBack"  # how it ended stays recorded
    rest = [h if h.get("result") != "Progressing" else {**h, "result": "Superseded"}
            for h in history if h.get("revision") != rollout["revision"]]
    merged = [{k: v for k, v in entry.items() if v is not None}, *rest]
    return merged[:limit]


def last_good(history: list[dict[str, Any]], *, excluding: str | None) -> ImageRef | None:
    """The newest image that completed a rollout and differs from the digest `excluding`: preferably one that ready
    pods ran (`verified`), else one that completed at zero replicas."""
    candidates = [h for h in history
                  if h.get("result") == "Complete" and h.get("digest") and h.get("digest") != excluding]
    for entry in sorted(candidates, key=lambda h: not h.get("verified")):  # stable: newest first within each
        try:
            image = parse_image(str(entry.get("image")))
        except ValueError:
            continue
        if image.pinned:
            return image
    return None


ROLLBACK_ANNOTATION = "digest.dev/rollback"
"""On the worker Deployment while a rollback is in effect (JSON of `status.rollback`): the rollback survives a
status write that failed after the Deployment was applied."""


@dataclass(frozen=True)
class Rollback:
    failed: ImageRef
    restored: ImageRef
    generation: int | None = None
    time: str | None = None
    message: str | None = None
    """Why the rollout of `failed` failed."""

    def as_status(self) -> dict[str, Any]:
        return {k: v for k, v in {"failedImage": str(self.failed), "restoredImage": str(self.restored),
                                  "generation": self.generation, "time": self.time,
                                  "message": self.message}.items() if v is not None}


def _parse_rollback(record: dict[str, Any]) -> Rollback | None:
    try:
        failed = parse_image(str(record.get("failedImage")))
        restored = parse_image(str(record.get("restoredImage")))
    except ValueError:
        return None
    if not (failed.pinned and restored.pinned):
        return None
    generation = record.get("generation")
    return Rollback(failed, restored, int(generation) if generation is not None else None, record.get("time"),
                    record.get("message"))


def recorded_rollback(status_rollback: dict[str, Any] | None, deployment: dict[str, Any] | None) -> Rollback | None:
    """The rollback recorded in status, else the one the live Deployment carries."""
    if status_rollback:
        return _parse_rollback(status_rollback)
    annotation = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(ROLLBACK_ANNOTATION)
    if not annotation:
        return None
    try:
        record = json.loads(annotation)
    except ValueError:
        return None
    return _parse_rollback(record) if isinstance(record, dict) else None


def rollback_in_effect(recorded: Rollback | None, generation: int | None) -> Rollback | None:
    """The recorded rollback, unless the spec changed since (then the failed digest may be tried again)."""
    return recorded if recorded is not None and recorded.generation == generation else None


def mark_rolled_back(history: list[dict[str, Any]], rollback: Rollback) -> list[dict[str, Any]]:
    """Failed entries of the rolled-back digest read RolledBack."""
    return [{**h, "result": "RolledBack"}
            if h.get("result") in ("Failed", "Progressing", "Superseded") and h.get("digest") == rollback.failed.digest
            else h for h in history]


def annotate(deployment: dict[str, Any], rollback: Rollback) -> dict[str, Any]:
    """`deployment` carrying the rollback annotation."""
    meta = deployment["metadata"]
    annotations = {**(meta.get("annotations") or {}),
                   ROLLBACK_ANNOTATION: json.dumps(rollback.as_status(), sort_keys=True)}
    return {**deployment, "metadata": {**meta, "annotations": annotations}}


def should_roll_back(
    rollout: dict[str, Any], history: list[dict[str, Any]], *, auto_rollback: bool, generation: int | None = None,
    now: str | None = None,
) -> Rollback | None:
    """A failed rollout with autoRollback and an earlier good digest → roll back to that digest."""
    if not auto_rollback or rollout.get("phase") != "Failed":
        return None
    digest = rollout.get("digest")
    good = last_good(history, excluding=digest)
    image = rollout.get("image")
    if good is None or not image or not digest:
        return None
    return Rollback(parse_image(str(image)), good, generation, now, rollout.get("message"))
