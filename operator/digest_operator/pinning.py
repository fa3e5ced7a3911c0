"""Pure: which digest should the workloads run, and must the registry be asked for it now?

Inputs are the spec's image and policy, the resolution recorded in `status.image`, the resolve-request annotation
and the clock; the registry I/O itself happens in `reconcile` through a `Resolver`.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Literal

from digest_api.imageref import ImageRef, parse_image
from digest_api.spec import ImagePolicy

RESOLVE_REQUESTED_AT = "digest.dev/resolve-requested-at"
"""Annotation: changing its value (e.g. to the current time) makes the operator resolve the tag again."""

_DURATION_PART = re.compile(r"([0-9]+)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}

Action = Literal["use", "refuse", "recorded", "resolve", "wait"]


@dataclass(frozen=True)
class Backoff:
    initial: float = 10.0
    maximum: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failed resolutions in a row (exponential, capped)."""
        if failures <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * 2 ** min(failures - 1, 30)))


@dataclass(frozen=True)
class Decision:
    action: Action
    image: ImageRef | None = None
    """use: the spec's pinned image; recorded: the digest resolved earlier for this spec."""
    why: str = ""
    """resolve: the trigger (spec change, request, track interval)."""
    retry_in: float | None = None
    """wait: seconds until the next attempt is due."""


def seconds(duration: str) -> float:
    """A Prometheus-style duration (`1h30m`, `5m`, `500ms`) in seconds."""
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration)))


def parse_time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def recorded_resolution(requested: ImageRef, image_status: dict[str, Any]) -> ImageRef | None:
    """The digest resolved earlier for exactly this `spec.image`, if any."""
    if image_status.get("requested") != str(requested):
        return None
    try:
        resolved = parse_image(str(image_status.get("resolved") or ""))
    except ValueError:
        return None
    return resolved if resolved.pinned and resolved.name == requested.name else None


def decide(
    requested: ImageRef, policy: ImagePolicy, *, generation: int | None, annotations: dict[str, Any],
    image_status: dict[str, Any], now: datetime.datetime, backoff: Backoff,
) -> Decision:
    if requested.pinned:
        return Decision("use", requested)
    if policy.mode == "Require":
        return Decision("refuse")
    recorded = recorded_resolution(requested, image_status)
    request = annotations.get(RESOLVE_REQUESTED_AT)
    why = ""
    if recorded is None:
        why = "first resolution" if not image_status.get("resolved") else "spec.image changed"
    elif image_status.get("resolvedGeneration") != generation:
        why = "spec changed"
    elif request is not None and str(request) != image_status.get("resolveRequestedAt"):
        why = f"requested by {RESOLVE_REQUESTED_AT}={request}"
    elif policy.mode == "Track":
        resolved_at = parse_time(image_status.get("resolvedTime"))
        if resolved_at is None or (now - resolved_at).total_seconds() >= seconds(policy.track_interval):
            why = f"track interval {policy.track_interval} elapsed"
    if not why:
        return Decision("recorded", recorded)
    failures = int(image_status.get("resolveFailures") or 0)
    last = parse_time(image_status.get("lastResolveAttemptTime"))
    if failures and last is not None:
        due = last + datetime.timedelta(seconds=backoff.delay(failures))
        if now < due:
            return Decision("wait", recorded, why, retry_in=(due - now).total_seconds())
    return Decision("resolve", recorded, why)


RESOLUTION_KEYS = ("requested", "resolved", "resolvedTime", "resolvedGeneration", "resolveRequestedAt",
                   "resolveFailures", "lastResolveAttemptTime")


def resolved_status(
    previous: dict[str, Any], requested: ImageRef, resolved: ImageRef, *, generation: int | None,
    annotations: dict[str, Any], now: str,
) -> dict[str, Any]:
    """`status.image` resolution bookkeeping after a successful resolution."""
    result = {k: v for k, v in previous.items() if k not in ("resolveFailures", "lastResolveAttemptTime")}
    result.update(requested=str(requested), resolved=str(resolved), resolvedGeneration=generation,
                  resolvedTime=now)
    request = annotations.get(RESOLVE_REQUESTED_AT)
    if request is not None:
        result["resolveRequestedAt"] = str(request)
    return result


def failed_status(previous: dict[str, Any], requested: ImageRef, now: str) -> dict[str, Any]:
    """`status.image` bookkeeping after a failed resolution."""
    result = dict(previous)
    if previous.get("requested") != str(requested):
        for key in ("resolved", "resolvedTime", "resolvedGeneration"):
            result.pop(key, None)
    result.update(requested=str(requested), resolveFailures=int(previous.get("resolveFailures") or 0) + 1,
                  lastResolveAttemptTime=now)
    return result
