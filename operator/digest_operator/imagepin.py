"""The I/O half of digest pinning: which image a reconcile renders, asking the registry when `pinning` says so.

Decisions are pure (`pinning`); this module reads pull secrets, calls the `Resolver` (the registry client) and
records what happened in the reconcile's `Observation`.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Protocol

from digest_api.imageref import ImageRef, parse_image
from digest_api.parse import Pipeline
from digest_operator import pinning
from digest_operator.conditions import IMAGE_PINNED, find
from digest_operator.k8s import ApiError
from digest_operator.pinning import Backoff
from digest_operator.pullsecrets import credentials_for
from digest_operator.registry import Credentials, RegistryError, Resolved, split_name
from digest_operator.status import Event, Observation


class SecretReader(Protocol):
    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...


class Resolver(Protocol):
    async def resolve(self, image: ImageRef, credentials: Credentials | None = None) -> Resolved:
        ...


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


async def pull_credentials(
    api: SecretReader, namespace: str, secret_names: list[str], image: ImageRef,
) -> Credentials | None:
    """Registry credentials for `image` from the named imagePullSecrets (missing Secrets are skipped)."""
    if not secret_names:
        return None
    secrets = await asyncio.gather(*(api.get("v1", "secrets", namespace, name) for name in secret_names))
    return credentials_for(split_name(image.name)[0], [s for s in secrets if s is not None])


async def pin(
    api: SecretReader, pipeline: Pipeline, body: dict[str, Any], old_status: dict[str, Any], observation: Observation,
    deployment: dict[str, Any] | None, resolver: Resolver | None, backoff: Backoff, now: str,
) -> ImageRef | None:
    """The image to render (None: no workload), with the pinning facts recorded in `observation`."""
    requested = pipeline.image
    old_image: dict[str, Any] = dict(old_status.get("image") or {})
    annotations = dict((body.get("metadata") or {}).get("annotations") or {})
    decision = pinning.decide(
        requested, pipeline.spec.image_policy, generation=pipeline.generation, annotations=annotations,
        image_status=old_image, now=pinning.parse_time(now) or datetime.datetime.now(datetime.UTC), backoff=backoff,
    )
    kept = {k: old_image[k] for k in pinning.RESOLUTION_KEYS if k in old_image}
    observation.resolution = kept
    if decision.action == "use":
        observation.resolution = {}
        return requested
    if decision.action == "refuse":
        observation.image_refused = True
        return last_good_image(deployment, old_status)
    if decision.action == "recorded":
        return decision.image
    if decision.action == "wait":
        previous = find(list(old_status.get("conditions") or []), IMAGE_PINNED) or {}
        observation.pin_failure = (str(previous.get("reason") or "RegistryUnavailable"),
                                   str(previous.get("message") or "waiting to retry the registry"))
        observation.retry_in = decision.retry_in
        return last_good_image(deployment, old_status)
    names = [ref.name for ref in pipeline.spec.image_pull_secrets]
    hint = ""
    try:
        credentials = await pull_credentials(api, pipeline.namespace, names, requested)
    except ApiError as exc:
        if exc.transient:
            raise
        credentials = None  # e.g. no RBAC to read Secrets here: try anonymously, and say why
        hint = (f"; reading imagePullSecrets failed ({exc.status} {exc.reason}): bind the ClusterRole "
                f"digest-operator-pull-secrets to the operator in namespace {pipeline.namespace}")
    try:
        if resolver is None:
            raise RegistryError("RegistryUnavailable", "the operator has no registry client")
        resolved = await resolver.resolve(requested, credentials)
    except RegistryError as exc:
        observation.resolution = pinning.failed_status(kept, requested, now)
        observation.pin_failure = (exc.reason, exc.message + hint)
        observation.retry_in = backoff.delay(int(observation.resolution["resolveFailures"]))
        return last_good_image(deployment, old_status)
    image = ImageRef(requested.name, requested.tag, resolved.digest)
    observation.resolution = pinning.resolved_status(
        kept, requested, image, generation=pipeline.generation, annotations=annotations, now=now,
    )
    if kept.get("resolved") != str(image):
        kind = "multi-arch index" if resolved.multi_arch else "manifest"
        observation.notes.append(Event("Normal", "TagResolved",
                                       f"{requested} resolved to {resolved.digest} ({kind}; {decision.why})"))
    return image
