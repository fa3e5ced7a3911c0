"""The `DigestPipeline` status, written only by the operator (and, for `deadLetter`, the DLQ monitor)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from digest_api.spec import Model

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    """Condition type: Ready, ImagePinned, Progressing, Degraded or DeadLetterClear."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed for."""
    last_transition_time: datetime
    """When the status last changed."""
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    """One-word CamelCase reason."""
    message: str = Field(max_length=32768)
    """Human-readable details."""


class ImageStatus(Model):
    """The image the workloads run."""

    ref: str | None = None
    """The digest-pinned reference rendered into the Deployment and CronJob."""
    digest: str | None = None
    """Its digest (`sha256:...`)."""
    short: str | None = None
    """Short form for `kubectl get`: `<name>@<12 hex>`."""
    requested: str | None = None
    """`spec.image` as last seen, when it differs from `ref` (e.g. a refused tag, or a tag resolved by the
    operator)."""
    resolved: str | None = None
    """Resolve/Track: the tag's digest as last resolved from the registry (`repo:tag@sha256:...`)."""
    resolved_time: datetime | None = None
    """When `resolved` was last confirmed by the registry."""
    resolved_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation `resolved` was resolved for (a spec change resolves again)."""
    resolve_requested_at: str | None = None
    """The value of the `digest.dev/resolve-requested-at` annotation last acted on."""
    resolve_failures: int | None = Field(default=None, ge=0)
    """Failed resolutions in a row (they are retried with exponential backoff)."""
    last_resolve_attempt_time: datetime | None = None
    """When the registry was last asked, successfully or not."""


class RolloutStatus(Model):
    """The latest rollout of the worker Deployment, read like `kubectl rollout status`."""

    revision: int = Field(ge=1)
    """Counts the worker pod templates this pipeline has rolled out (1, 2, ...)."""
    image: str | None = None
    """The worker image of this rollout."""
    digest: str | None = None
    """Its digest."""
    phase: Literal["Progressing", "Complete", "Failed"]
    """Progressing, Complete or Failed (progress deadline exceeded)."""
    message: str | None = None
    """Details, e.g. `1 of 2 updated replicas are available`."""
    started_time: datetime | None = None
    """When the operator first saw this pod template."""
    finished_time: datetime | None = None
    """When the rollout completed or failed."""
    verified: bool | None = None
    """Complete with ready pods. A rollout while KEDA holds the worker at zero replicas completes without starting
    a pod; it is verified (or fails) when the worker first scales up."""
    template_hash: str | None = None
    """Hash of the Deployment's pod template (a new hash is a new rollout)."""


class HistoryEntry(Model):
    """One past or current rollout."""

    revision: int = Field(ge=1)
    """Rollout revision (see `rollout.revision`)."""
    image: str | None = None
    """The worker image."""
    digest: str | None = None
    """Its digest."""
    result: Literal["Progressing", "Complete", "Failed", "RolledBack", "Superseded"]
    """How it ended: Complete, Failed, RolledBack (failed and replaced by the last good digest), Superseded (a newer
    rollout started before it finished) or still Progressing."""
    started_time: datetime | None = None
    """When it started."""
    finished_time: datetime | None = None
    """When it ended."""
    verified: bool | None = None
    """Ready pods ran it (see `rollout.verified`); rollbacks prefer verified digests."""


class RollbackStatus(Model):
    """An automatic rollback in effect: `failedImage` is not tried again until the spec changes."""

    failed_image: str
    """The image whose rollout failed."""
    restored_image: str
    """The last image that completed a rollout, now running again."""
    generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the rollback applies to."""
    time: datetime | None = None
    """When the operator rolled back."""
    message: str | None = None
    """Why the rollout of `failedImage` failed."""


class DeadLetterRun(Model):
    """The last finished DLQ monitor run, from its report (the pod's termination message)."""

    time: datetime | None = None
    """When the monitor evaluated the policy."""
    pod: str | None = None
    """The monitor pod that wrote the report."""
    mode: Literal["Active", "DryRun"] | None = None
    """The policy mode of that run."""
    decisions: dict[str, int] = Field(default_factory=dict)
    """Messages per decided action (Requeue, Park, Skip)."""
    requeued: int = Field(default=0, ge=0)
    """Messages requeued (copies sent, originals completed)."""
    parked: int = Field(default=0, ge=0)
    """Messages moved to the park queue."""
    left: int = Field(default=0, ge=0)
    """Messages the policy chose but that stayed in the dead-letter queue (e.g. too large to send)."""
    failed: int = Field(default=0, ge=0)
    """Messages whose action failed (still in, or back in, the dead-letter queue)."""
    errors: list[str] = Field(default_factory=list, max_length=5)
    """Run-level errors (shortened)."""


class DeadLetterStatus(Model):
    """Dead-letter queue facts, from the last DLQ monitor report."""

    count: int | None = Field(default=None, ge=0)
    """Messages in the dead-letter queue at the last check."""
    count_source: Literal["management", "peek"] | None = None
    """Where `count` came from: the management API's runtime properties, or a peek walk of the dead-letter queue
    (where the monitor's identity lacks the Manage right)."""
    oldest_enqueued_time: datetime | None = None
    """Enqueued time of the oldest dead-lettered message."""
    last_checked_time: datetime | None = None
    """When the monitor last looked."""
    circuit: Literal["Closed", "Open"] | None = None
    """Circuit breaker of the requeue policy: Open pauses automatic requeues."""
    last_run: DeadLetterRun | None = None
    """Counts of the last monitor run."""


class DigestPipelineStatus(Model):
    """Observed state of a pipeline."""

    observed_generation: int | None = None
    """The metadata.generation the status reflects."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready (summary), ImagePinned, Progressing, Degraded and DeadLetterClear."""
    image: ImageStatus | None = None
    """Image in use."""
    replicas: int | None = None
    """Worker replicas (set by KEDA through the HPA)."""
    ready_replicas: int | None = None
    """Worker replicas that are ready."""
    dead_letter: DeadLetterStatus | None = None
    """Dead-letter queue facts."""
    rollout: RolloutStatus | None = None
    """The latest rollout."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """The last `spec.rollout.historyLimit` rollouts, newest first."""
    rollback: RollbackStatus | None = None
    """The automatic rollback in effect, if any."""
