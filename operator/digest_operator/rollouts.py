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

from digest_operator.api.imageref import ImageRef, parse_image
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


def track(old: dict[str, Any] | None, deployment: dict[str, Any], state: RolloutState, now: str) -> dict[str, Any]:
    """The new `status.rollout` for the live `deployment` in `state`."""
    digest_hash = template_hash(deployment)
    if old is None or old.get("templateHash") != digest_hash:
        image = worker_image(deployment)
        record: dict[str, Any] = {
            "revision": int((old or {}).get("revision") or 0) + 1, "image": image, "digest": digest_of(image),
            "phase": "Progressing", "startedTime": now, "templateHash": digest_hash,
        }
    else:
        record = dict(old)
    if record["phase"] != "Complete":
        record["phase"], record["message"] = state.phase, state.message
        if state.phase == "Progressing":
            record.pop("finishedTime", None)
        elif not record.get("finishedTime") or (old or {}).get("phase") != state.phase:
            record["finishedTime"] = now
    return {k: v for k, v in record.items() if v is not None}


def record_history(
    history: list[dict[str, Any]], rollout: dict[str, Any], limit: int, *, result: str | None = None,
) -> list[dict[str, Any]]:
    """`history` with `rollout` upserted at the front (newest first), at most `limit` entries."""
    entry = {
        "revision": rollout["revision"], "image": rollout.get("image"), "digest": rollout.get("digest"),
        "result": result or rollout["phase"], "startedTime": rollout.get("startedTime"),
        "finishedTime": rollout.get("finishedTime"),
    }
    previous = next((h for h in history if h.get("revision") == rollout["revision"]), None)
    if previous is not None and previous.get("result") == "RolledBack" and result is None:
        entry["result"] = "RolledBack"  # how it ended stays recorded
    rest = [h for h in history if h.get("revision") != rollout["revision"]]
    merged = [{k: v for k, v in entry.items() if v is not None}, *rest]
    return merged[:limit]


def last_good(history: list[dict[str, Any]], *, excluding: str | None) -> ImageRef | None:
    """The newest image that completed a rollout and differs from the digest `excluding`."""
    for entry in history:
        if entry.get("result") == "Complete" and entry.get("digest") and entry.get("digest") != excluding:
            try:
                image = parse_image(str(entry.get("image")))
            except ValueError:
                continue
            if image.pinned:
                return image
    return None


@dataclass(frozen=True)
class Rollback:
    failed: ImageRef
    restored: ImageRef


def rollback_in_effect(status_rollback: dict[str, Any] | None, generation: int | None) -> Rollback | None:
    """The recorded rollback, unless the spec changed since (then the failed digest may be tried again)."""
    if not status_rollback or status_rollback.get("generation") != generation:
        return None
    try:
        failed = parse_image(str(status_rollback.get("failedImage")))
        restored = parse_image(str(status_rollback.get("restoredImage")))
    except ValueError:
        return None
    return Rollback(failed, restored) if failed.pinned and restored.pinned else None


def should_roll_back(
    rollout: dict[str, Any], history: list[dict[str, Any]], *, auto_rollback: bool,
) -> Rollback | None:
    """A failed rollout with autoRollback and an earlier good digest → roll back to that digest."""
    if not auto_rollback or rollout.get("phase") != "Failed":
        return None
    digest = rollout.get("digest")
    good = last_good(history, excluding=digest)
    image = rollout.get("image")
    if good is None or not image or not digest:
        return None
    return Rollback(parse_image(str(image)), good)
