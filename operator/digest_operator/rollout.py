"""Pure: the rollout state of a Deployment, read like `kubectl rollout status` does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["Progressing", "Complete", "Failed"]


@dataclass(frozen=True)
class RolloutState:
    phase: Phase
    message: str
    replicas: int
    ready_replicas: int
    reason: str = ""
    """For Failed: ProgressDeadlineExceeded, or NewPodsFailing when the new pods cannot start."""


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(status.get("replicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    ready = int(status.get("readyReplicas", 0))
    generation = int(meta.get("generation", 0))
    observed = status.get("observedGeneration")

    def state(phase: Phase, message: str) -> RolloutState:
        return RolloutState(phase, message, replicas, ready)

    if observed is None or int(observed) < generation:
        return state("Progressing", "waiting for the Deployment controller to observe the new spec")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            message = f"rollout exceeded its progress deadline: {cond.get('message', '')}".strip()
            return RolloutState("Failed", message, replicas, ready, "ProgressDeadlineExceeded")
    if updated < desired:
        return state("Progressing", f"{updated} of {desired} updated replicas are available")
    if replicas > updated:
        return state("Progressing", f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return state("Progressing", f"{available} of {updated} updated replicas are available")
    if desired == 0:
        return state("Complete", "scaled to zero; KEDA scales the worker up when messages arrive")
    return state("Complete", f"{ready}/{desired} replicas ready")
