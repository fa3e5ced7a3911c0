"""Pure: compute the pipeline's status and the Events worth posting from what a reconcile saw and did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from digest_api.imageref import ImageRef
from digest_operator.conditions import (
    DEAD_LETTER_CLEAR,
    DEGRADED,
    IMAGE_PINNED,
    PROGRESSING,
    READY,
    Condition,
    find,
    merge_conditions,
)
from digest_operator.rollout import RolloutState
from digest_operator.rollouts import Rollback

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Change:
    """One write the reconcile made to a child: action is Created, Updated, DriftRepaired or Pruned."""

    action: str
    kind: str
    name: str


@dataclass
class Observation:
    """What one reconcile found and did; the input of `compute`."""

    generation: int | None
    invalid: list[tuple[str, str]] | None = None
    requested_image: str | None = None
    image: ImageRef | None = None  # the pinned image rendered into the workloads, if any
    image_refused: bool = False
    conflicts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rollout: RolloutState | None = None
    changes: list[Change] = field(default_factory=list)
    resolution: dict[str, Any] = field(default_factory=dict)
    """status.image resolution bookkeeping (see `pinning.RESOLUTION_KEYS`)."""
    pin_failure: tuple[str, str] | None = None
    """(reason, message) when the tag could not be resolved."""
    retry_in: float | None = None
    notes: list[Event] = field(default_factory=list)
    """Events decided during the reconcile (e.g. a tag resolved to a new digest)."""
    rollback: Rollback | None = None
    """The automatic rollback in effect."""
    rollout_record: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    dead_letter: dict[str, Any] | None = None
    """The new `status.deadLetter` (from the DLQ monitor's report; see `deadletter`), None = keep the old one."""
    dead_letter_condition: Condition | None = None
    dead_letter_events: list[Event] = field(default_factory=list)


def _conditions(obs: Observation) -> list[Condition]:
    if obs.invalid is not None:
        message = "; ".join(f"{path}: {msg}" for path, msg in obs.invalid)
        return [
            Condition(READY, "False", "InvalidSpec", message),
            Condition(DEGRADED, "True", "InvalidSpec", message),
        ]
    conds: list[Condition] = []
    running = f"; still running {obs.image}" if obs.image else "; nothing is deployed until it is pinned"
    if obs.image_refused:
        conds.append(Condition(
            IMAGE_PINNED, "False", "TagNotAllowed",
            f"spec.image {obs.requested_image} is not pinned by digest (imagePolicy Require); pin it as "
            f"<repo>:<tag>@sha256:<digest> or set spec.imagePolicy.mode: Resolve{running}",
        ))
    elif obs.pin_failure is not None:
        reason, message = obs.pin_failure
        conds.append(Condition(IMAGE_PINNED, "False", reason, message.split("; still running")[0] + running))
    elif obs.resolution.get("resolved"):
        conds.append(Condition(IMAGE_PINNED, "True", "TagResolved",
                               f"workloads run {obs.image}, resolved from {obs.resolution.get('requested')}"))
    else:
        conds.append(Condition(IMAGE_PINNED, "True", "DigestPinned", f"workloads run {obs.image}"))

    rollout = obs.rollout
    if rollout is None:
        conds.append(Condition(PROGRESSING, "Unknown", "NoWorkload", "the worker Deployment does not exist"))
    elif rollout.phase == "Progressing":
        conds.append(Condition(PROGRESSING, "True", "RolloutInProgress", rollout.message))
    elif rollout.phase == "Failed":
        conds.append(Condition(PROGRESSING, "False", rollout.reason or "ProgressDeadlineExceeded", rollout.message))
    else:
        conds.append(Condition(PROGRESSING, "False", "RolloutComplete", rollout.message))

    if obs.failures:
        conds.append(Condition(DEGRADED, "True", "ApplyFailed", "; ".join(obs.failures)))
    elif obs.conflicts:
        conds.append(Condition(DEGRADED, "True", "ChildConflict", "; ".join(obs.conflicts)))
    elif obs.rollback is not None:
        conds.append(Condition(
            DEGRADED, "True", "RolledBack",
            f"the rollout of {obs.rollback.failed} failed ({obs.rollback.message or 'no details'}); rolled back to "
            f"{obs.rollback.restored}, the last image that completed a rollout. The failed digest is not tried "
            f"again until the spec changes",
        ))
    elif rollout is not None and rollout.phase == "Failed":
        conds.append(Condition(DEGRADED, "True", rollout.reason or "ProgressDeadlineExceeded", rollout.message))
    else:
        conds.append(Condition(DEGRADED, "False", "AsExpected", ""))

    if obs.failures:
        ready = Condition(READY, "False", "ApplyFailed", "; ".join(obs.failures))
    elif obs.conflicts:
        ready = Condition(READY, "False", "ChildConflict", "; ".join(obs.conflicts))
    elif obs.image_refused:
        ready = Condition(READY, "False", "ImageNotPinned", "spec.image must be pinned by digest")
    elif obs.pin_failure is not None and obs.image is None:
        ready = Condition(READY, "False", obs.pin_failure[0], "the image could not be resolved: nothing is deployed")
    elif rollout is None:
        ready = Condition(READY, "False", "NoWorkload", "the worker Deployment does not exist yet")
    elif rollout.phase == "Failed":
        ready = Condition(READY, "False", "RolloutFailed", rollout.message)
    elif rollout.phase == "Progressing":
        ready = Condition(READY, "False", "RolloutInProgress", rollout.message)
    else:
        ready = Condition(READY, "True", "Available", rollout.message)
    if obs.dead_letter_condition is not None:
        conds.append(obs.dead_letter_condition)
    return [ready, *conds]


def compute(old_status: dict[str, Any], obs: Observation, now: str) -> dict[str, Any]:
    """The complete new status (fields this operator owns, plus `deadLetter` kept as it was)."""
    status: dict[str, Any] = {
        key: value for key, value in old_status.items()
        if key in ("deadLetter", "image", "rollout", "history", "rollback")
    }
    status["conditions"] = merge_conditions(
        list(old_status.get("conditions") or []), _conditions(obs), obs.generation, now,
    )
    if obs.invalid is not None:
        status["observedGeneration"] = obs.generation
        status.update({k: old_status[k] for k in ("replicas", "readyReplicas") if k in old_status})
        return {k: v for k, v in status.items() if v is not None}
    status["observedGeneration"] = obs.generation
    if obs.dead_letter is not None:
        status["deadLetter"] = obs.dead_letter
    image: dict[str, Any] = dict(obs.resolution)
    if obs.image is not None:
        image.update(ref=str(obs.image), digest=obs.image.digest, short=obs.image.short)
    if obs.requested_image and obs.requested_image != image.get("ref"):
        image["requested"] = obs.requested_image
    status["image"] = image or None
    if obs.rollout_record is not None:
        status["rollout"] = obs.rollout_record
    if obs.history:
        status["history"] = obs.history
    if obs.rollback is None:
        status.pop("rollback", None)
    else:
        status["rollback"] = obs.rollback.as_status()
    if obs.rollout is not None:
        status["replicas"] = obs.rollout.replicas
        status["readyReplicas"] = obs.rollout.ready_replicas
    return {k: v for k, v in status.items() if v is not None}


CHANGE_ACTIONS = frozenset({"Created", "Updated", "DriftRepaired", "Pruned"})
"""Event reasons that report writes to children (the other Events report condition transitions)."""


def events(old_status: dict[str, Any], new_status: dict[str, Any], obs: Observation) -> list[Event]:
    """Events for transitions only: changed children, and conditions whose reason or status changed."""
    result: list[Event] = []
    by_action: dict[str, list[str]] = {}
    for change in obs.changes:
        by_action.setdefault(change.action, []).append(f"{change.kind}/{change.name}")
    for action, items in by_action.items():
        kind: EventType = "Warning" if action == "DriftRepaired" else "Normal"
        verb = {"Created": "created", "Updated": "updated", "DriftRepaired": "repaired drift in",
                "Pruned": "deleted"}.get(action, action.lower())
        result.append(Event(kind, action, f"{verb} {', '.join(items)}"))

    old_conds = list(old_status.get("conditions") or [])
    new_conds = list(new_status.get("conditions") or [])

    def transitioned(type_: str) -> dict[str, Any] | None:
        new, old = find(new_conds, type_), find(old_conds, type_)
        if new is None:
            return None
        if old is None or (old.get("status"), old.get("reason"), old.get("message")) != (
            new.get("status"), new.get("reason"), new.get("message")
        ):
            return new
        return None

    ready = transitioned(READY)
    if ready is not None and ready["reason"] == "InvalidSpec":
        result.append(Event("Warning", "InvalidSpec", ready["message"]))
    pinned = transitioned(IMAGE_PINNED)
    if pinned is not None and pinned["status"] == "False":
        result.append(Event("Warning", pinned["reason"], pinned["message"]))
    degraded = transitioned(DEGRADED)
    if degraded is not None and degraded["status"] == "True" and degraded["reason"] != "InvalidSpec":
        result.append(Event("Warning", degraded["reason"], degraded["message"]))
    if ready is not None and ready["status"] == "True":
        old_ready = find(old_conds, READY)
        if old_ready is None or old_ready.get("status") != "True":
            result.append(Event("Normal", "Ready", ready["message"]))
    clear, old_clear = find(new_conds, DEAD_LETTER_CLEAR), find(old_conds, DEAD_LETTER_CLEAR)
    if clear is not None and clear["status"] == "False" and (old_clear or {}).get("status") != "False":
        result.append(Event("Warning", clear["reason"], clear["message"]))
    result.extend(obs.dead_letter_events)
    return result
