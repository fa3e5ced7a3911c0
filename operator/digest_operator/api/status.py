"""The `DigestPipeline` status, written only by the operator (and, for `deadLetter`, the DLQ monitor)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from digest_operator.api.spec import Model

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
    """`spec.image` as last seen, when it differs from `ref` (e.g. a refused tag)."""


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
