"""Kopf wiring: resume/create/update and a timer call one reconcile; status via Kopf's patch; Events on transitions.

Handlers are registered into an explicit registry so that several operator instances can run in one process
(tests, benchmarks).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from digest_operator.api import GROUP, PLURAL, VERSION
from digest_operator.k8s import ApiError
from digest_operator.reconcile import reconcile
from digest_operator.runtime import Runtime

PERSISTENCE_PREFIX = "digest.dev"


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


async def run_reconcile(
    runtime: Runtime, body: Any, patch: kopf.Patch, logger: logging.Logger | Any, *, from_timer: bool,
) -> None:
    raw = plain(body)
    meta = raw.get("metadata", {})
    uid = str(meta.get("uid"))
    started = time.perf_counter()
    metrics = runtime.metrics
    async with runtime.lock(uid):
        try:
            outcome = await reconcile(raw, runtime.client, utcnow())
        except ApiError as exc:
            metrics.reconciles.labels("error").inc()
            delay = exc.retry_after or runtime.config.retry_delay
            if exc.transient:
                raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=delay) from exc
            raise kopf.TemporaryError(f"Kubernetes API refused a request: {exc}", delay=delay * 4) from exc
        finally:
            runtime.reconcile_count += 1
            metrics.reconcile_seconds.observe(time.perf_counter() - started)
    if outcome.status_patch:
        for key, value in outcome.status_patch.items():
            patch.status[key] = value
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    for change in outcome.changes:
        metrics.child_writes.labels(change.action, change.kind).inc()
    dead = (outcome.status.get("deadLetter") or {}).get("count")
    metrics.set_pipeline(meta.get("namespace", ""), meta.get("name", ""), outcome.ready, dead)
    if outcome.invalid is not None:
        metrics.reconciles.labels("invalid").inc()
        if not from_timer:  # the timer only keeps the status current; no retries, no log spam
            raise kopf.PermanentError(f"invalid DigestPipeline: {outcome.invalid}")
        return
    if outcome.failed:
        metrics.reconciles.labels("error").inc()
        raise kopf.TemporaryError("some children could not be applied; see the Degraded condition",
                                  delay=runtime.config.retry_delay * 4)
    metrics.reconciles.labels("ok").inc()
    if outcome.changes:
        logger.info("reconciled: %s", ", ".join(f"{c.action} {c.kind}/{c.name}" for c in outcome.changes))


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

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, field="spec")
    async def _changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await run_reconcile(runtime, body, patch, logger, from_timer=False)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, interval=runtime.config.resync_seconds,
                initial_delay=runtime.config.resync_seconds)
    async def _resync(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await run_reconcile(runtime, body, patch, logger, from_timer=True)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True)
    def _deleted(meta: kopf.Meta, **_: Any) -> None:
        # Children go away by garbage collection (ownerReferences); only forget local state.
        runtime.metrics.forget_pipeline(str(meta.get("namespace")), str(meta.get("name")))
        runtime.forget(str(meta.get("uid")))
