"""Kopf wiring: every trigger calls one reconcile; the status is written by our client; Events on transitions.

Triggers: resume/create/update of a pipeline, a resync timer (drift repair, level-triggered), and changes of the
worker Deployments the operator owns (rollout progress shows up in the status without waiting for the timer).
Handlers are registered into an explicit registry so that several operator instances can run in one process
(tests, benchmarks).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf

from digest_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from digest_operator.k8s import ApiError
from digest_operator.reconcile import reconcile
from digest_operator.render.meta import MANAGED_BY
from digest_operator.runtime import Runtime

PERSISTENCE_PREFIX = "digest.dev"
PIPELINES_INDEX = "pipelines_index"


def plain(value: Any) -> Any:
    """Kopf's read-only body views → plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def configure(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    config = runtime.config
    settings.persistence.finalizer = f"{PERSISTENCE_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration",
    )
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.networking.request_timeout = config.request_timeout
    settings.networking.error_backoffs = list(config.error_backoffs)
    settings.execution.default_backoff = config.retry_delay
    settings.peering.lifetime = config.peering_lifetime
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO


async def run_reconcile(runtime: Runtime, body: Any, logger: logging.Logger | Any, *, from_timer: bool) -> None:
    """Reconcile one pipeline, write its status and Events; map failures to Kopf's retry semantics.

    Triggers run one at a time per pipeline, and each re-reads the pipeline first: a trigger's copy may be older
    than the status the previous reconcile wrote, and Events and status are computed against the current state.
    """
    meta = plain(body).get("metadata", {})
    namespace, name = meta.get("namespace"), meta.get("name", "")
    started = time.perf_counter()
    metrics = runtime.metrics
    async with runtime.lock(str(meta.get("uid"))):
        try:
            raw = await runtime.client.get(API_VERSION, PLURAL, namespace, name)
            if raw is None or raw.get("metadata", {}).get("uid") != meta.get("uid"):
                return  # deleted (or replaced by a namesake) meanwhile
            outcome = await reconcile(raw, runtime.client, utcnow())
            if outcome.status_patch:
                await runtime.client.patch_status(API_VERSION, PLURAL, namespace, name, outcome.status_patch,
                                                  resource_version=raw["metadata"].get("resourceVersion"))
        except ApiError as exc:
            metrics.reconciles.labels("error").inc()
            delay = exc.retry_after or runtime.config.retry_delay
            if exc.transient:
                raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=delay) from exc
            raise kopf.TemporaryError(f"Kubernetes API refused a request: {exc}", delay=delay * 4) from exc
        finally:
            runtime.reconcile_count += 1
            metrics.reconcile_seconds.observe(time.perf_counter() - started)
        runtime.mark_reconciled(str(meta.get("uid")))
    for event in outcome.events:
        kopf.event(kopf.Body(cast(kopf.RawBody, raw)), type=event.type, reason=event.reason, message=event.message)
    for change in outcome.changes:
        metrics.child_writes.labels(change.action, change.kind).inc()
    dead_letter = outcome.status.get("deadLetter")
    metrics.set_pipeline(namespace or "", name, outcome.ready, (dead_letter or {}).get("count"))
    metrics.set_dead_letter(namespace or "", name, dead_letter)
    if outcome.invalid is not None:
        metrics.reconciles.labels("invalid").inc()
        if not from_timer:  # the timer only keeps the status current: no retries, no log spam
            raise kopf.PermanentError(f"invalid DigestPipeline: {outcome.invalid}")
        return
    if outcome.failed:
        metrics.reconciles.labels("error").inc()
        raise kopf.TemporaryError("some children could not be applied; see the Degraded condition",
                                  delay=runtime.config.retry_delay * 4)
    metrics.reconciles.labels("ok").inc()
    if outcome.changes:
        logger.info("reconciled: %s", ", ".join(f"{c.action} {c.kind}/{c.name}" for c in outcome.changes))


def owner_key(child: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the pipeline controlling `child`, if any."""
    meta = child.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION and ref.get("controller"):
            return str(meta.get("namespace")), str(ref.get("name"))
    return None


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every handler of the operator into `registry`."""

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, runtime)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return runtime.credentials()

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await runtime.close()

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=PIPELINES_INDEX)
    def _index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
        return {(str(namespace), name): plain(body)}

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, field="spec")
    async def _changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await run_reconcile(runtime, body, logger, from_timer=False)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, interval=runtime.config.resync_seconds,
                initial_delay=runtime.config.resync_seconds)
    async def _resync(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        if runtime.resync_due(str(body.get("metadata", {}).get("uid"))):
            await run_reconcile(runtime, body, logger, from_timer=True)

    @kopf.on.event("apps", "v1", "deployments", registry=registry,
                   labels={"app.kubernetes.io/managed-by": MANAGED_BY})
    async def _worker_changed(body: kopf.Body, type: str | None, logger: kopf.Logger, **kwargs: Any) -> None:
        deployment = plain(body)
        key = owner_key(deployment)
        index: kopf.Index[tuple[str, str], Any] = kwargs[PIPELINES_INDEX]
        if key is None or key not in index:
            return
        meta = deployment.get("metadata", {})
        worker = (str(meta.get("namespace")), str(meta.get("name")))
        if type == "DELETED":
            runtime.forget_worker(*worker)
        elif not runtime.worker_changed(*worker, deployment):
            return  # e.g. our own apply echoed back with nothing the status reports
        for pipeline in index[key]:
            if not (pipeline.get("metadata") or {}).get("deletionTimestamp"):
                await run_reconcile(runtime, pipeline, logger, from_timer=True)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True)
    def _deleted(meta: kopf.Meta, **_: Any) -> None:
        # Children go away by garbage collection (ownerReferences); only forget local state.
        runtime.metrics.forget_pipeline(str(meta.get("namespace")), str(meta.get("name")))
        runtime.forget(str(meta.get("uid")))
