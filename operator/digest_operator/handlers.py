"""Kopf wiring: every trigger calls one reconcile; the status is written by our client; Events on transitions.

Triggers: resume/create/update of a pipeline (Kopf's change handlers), and through one operator-wide work queue
(`workqueue`) a resync per pipeline every interval (drift repair, level-triggered, the safety net) and the changes
the watch caches report of the pipeline's children, pods and Jobs (rollout progress, a finished DLQ monitor, a child
deleted or edited), reconciled at once. A Kopf event handler keeps the queue's pipelines and their newest version;
no Kopf timer or daemon runs per pipeline (each would make Kopf keep the pipeline's whole body). Reconciles read
children from the caches and the pipeline from the newest version seen (Kopf's, or our last status write's), so one
with nothing to change makes no request. Handlers are registered into an explicit registry so that several
operator instances can run in one process (tests, benchmarks).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from digest_api import API_VERSION, GROUP, PLURAL, VERSION
from digest_operator import admission, peering
from digest_operator.imagepin import pull_credentials
from digest_operator.k8s import ApiError
from digest_operator.pinning import RESOLVE_REQUESTED_AT
from digest_operator.reconcile import reconcile
from digest_operator.registry import RegistryError
from digest_operator.runtime import CONCURRENT_RECONCILES, Runtime
from digest_operator.status import CHANGE_ACTIONS, Event
from digest_operator.workqueue import Item, WorkQueue

log = logging.getLogger(__name__)

PERSISTENCE_PREFIX = "digest.dev"
PIPELINE_LIST_PAGE = 100


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
    runtime.kopf_settings = settings
    settings.persistence.finalizer = f"{PERSISTENCE_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration",
    )
    # Kubernetes takes whole seconds: `timeoutSeconds=300.0` is refused with 400 (strconv.ParseInt), which kills
    # the watchers on a real apiserver
    settings.watching.server_timeout = max(1, round(config.watch_server_timeout))
    settings.watching.client_timeout = config.watch_client_timeout
    # Kopf lists again each time a watch ends: in pages, so a thousand pipelines' list is never one response held
    # whole (as text and decoded) beside the bodies it keeps
    settings.watching.chunk_size = PIPELINE_LIST_PAGE
    settings.networking.request_timeout = config.request_timeout
    settings.networking.error_backoffs = list(config.error_backoffs)
    settings.execution.default_backoff = config.retry_delay
    settings.peering.lifetime = config.peering_lifetime
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    if config.webhook != "off":
        # configure() runs again in the startup handler, on the same settings: keep the one server instance
        if not isinstance(settings.admission.server, admission.WebhookServer):
            settings.admission.server = admission.WebhookServer(config, lambda: runtime.client, runtime.webhook_dir)
        # the server writes the webhook configurations itself (with matchConditions); Kopf must not rewrite them
        settings.admission.managed = None


async def run_reconcile(runtime: Runtime, body: Any, logger: logging.Logger | Any, *, from_timer: bool,
                        resync: bool = False) -> None:
    """Reconcile one pipeline, write its status and Events; map failures to Kopf's retry semantics.

    Triggers run one at a time per pipeline, at most `runtime.slots` reconciles at once (a thousand pipelines
    created together must not queue a thousand reconciles' requests on the client's connections, where they time
    out), and a `resync` only when still due once its turn comes. Each takes the newest version of the pipeline
    known: a trigger's copy may be older than the status the previous reconcile wrote, and Events and status are
    computed against the current state (the status write's resourceVersion precondition catches what this process
    has not seen yet).
    """
    # only these three while waiting for a slot: a thousand waiting triggers must not each hold a copy of the body
    meta = {key: body.get("metadata", {}).get(key) for key in ("namespace", "name", "uid")}
    namespace, name = meta.get("namespace"), meta.get("name") or ""
    started = time.perf_counter()
    metrics = runtime.metrics
    async with runtime.lock(str(meta.get("uid"))), runtime.slots:
        if resync and not runtime.resync_due(str(meta.get("uid"))):
            return  # reconciled meanwhile (while this one waited for its turn)
        try:
            raw = runtime.freshest(plain(body))
            if raw is None:  # versions not comparable: read it
                raw = await runtime.client.get(API_VERSION, PLURAL, namespace, name)
            if raw is None or raw.get("metadata", {}).get("uid") != meta.get("uid"):
                return  # deleted (or replaced by a namesake) meanwhile
            if raw.get("metadata", {}).get("deletionTimestamp"):
                return  # being deleted: its children go by garbage collection, none is applied again
            outcome = await reconcile(raw, runtime.api, utcnow(), runtime.registry, runtime.backoff,
                                      pods=runtime.cache, cache=runtime.cache)
            for change in outcome.changes:  # the writes happened, whatever becomes of the status write
                metrics.child_writes.labels(change.action, change.kind).inc()
            try:
                if outcome.status_patch:
                    runtime.remember(await write_status(runtime.client, raw, outcome.status_patch))
            except ApiError:
                # the retry recomputes status transitions, but finds the children in sync: post the Events of
                # the writes now, or they are lost
                _post(raw, [e for e in outcome.events if e.reason in CHANGE_ACTIONS])
                raise
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
    _post(raw, outcome.events)
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
    if outcome.retry_in is not None and not from_timer:
        metrics.reconciles.labels("error").inc()
        raise kopf.TemporaryError("the image could not be resolved; see the ImagePinned condition",
                                  delay=max(outcome.retry_in, 0.1))
    metrics.reconciles.labels("ok").inc()
    if outcome.changes:
        logger.info("reconciled: %s", ", ".join(f"{c.action} {c.kind}/{c.name}" for c in outcome.changes))


class StatusClient(Protocol):
    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    async def patch_status(
        self, api_version: str, plural: str, namespace: str | None, name: str, patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        ...


async def write_status(client: StatusClient, raw: dict[str, Any], patch: dict[str, Any], attempts: int = 3) \
        -> dict[str, Any] | None:
    """Merge-patch the status of the pipeline `raw`, guarded by the resourceVersion the patch was computed from;
    returns the pipeline as written (None: it is gone).

    A conflict from a change that left the status alone (Kopf's own annotations, a label, a spec edit) does not make
    the patch wrong: it is written again against the new resourceVersion. Dropping it would lose what only this
    reconcile saw, e.g. how a revision it replaced ended, or the rollback it applied.
    """
    meta = raw["metadata"]
    namespace, name, version = meta.get("namespace"), meta.get("name", ""), meta.get("resourceVersion")
    for attempt in range(1, attempts + 1):
        try:
            return await client.patch_status(API_VERSION, PLURAL, namespace, name, patch, resource_version=version)
        except ApiError as exc:
            if exc.status != 409 or attempt == attempts:
                raise
            fresh = await client.get(API_VERSION, PLURAL, namespace, name)
            if (fresh is None or fresh.get("metadata", {}).get("uid") != meta.get("uid")
                    or fresh.get("status") != raw.get("status")):
                raise  # someone else wrote the status: recompute from it
            version = fresh["metadata"].get("resourceVersion")
    raise AssertionError("unreachable")


def _post(raw: dict[str, Any], events: list[Event]) -> None:
    for event in events:
        kopf.event(kopf.Body(cast(kopf.RawBody, raw)), type=event.type, reason=event.reason, message=event.message)


def resolution_requested(body: kopf.Body, **_: Any) -> bool:
    """Does the pipeline carry a `digest.dev/resolve-requested-at` value the status has not acted on yet?"""
    requested = (body.get("metadata", {}).get("annotations") or {}).get(RESOLVE_REQUESTED_AT)
    image = (body.get("status") or {}).get("image") or {}
    return requested is not None and str(requested) != image.get("resolveRequestedAt") and not (
        body.get("metadata", {}).get("deletionTimestamp"))


async def work(runtime: Runtime, item: Item) -> float | None:
    """One reconcile of the work queue (a resync, a wake-up or a retry); the delay of a retry (None: none)."""
    body = runtime.latest(item.uid)
    if body is None:  # only its version is held: read it
        try:
            body = await runtime.client.get(API_VERSION, PLURAL, *item.key)
        except ApiError as exc:
            log.warning("cannot read %s/%s: %s", *item.key, exc)
            return exc.retry_after or runtime.config.retry_delay
        if body is None or body.get("metadata", {}).get("uid") != item.uid:
            if runtime.queue is not None:
                runtime.queue.untrack(item.uid)
            return None
    settings = runtime.kopf_settings
    logger: logging.Logger | kopf.ObjectLogger = log if settings is None else \
        kopf.ObjectLogger(body=kopf.Body(cast(kopf.RawBody, body)), settings=settings)
    try:
        await run_reconcile(runtime, body, logger, from_timer=True, resync=item.resync)
    except kopf.TemporaryError as exc:
        logger.warning("%s failed, retrying in %s s: %s", "resync" if item.resync else "reconcile", exc.delay, exc)
        return exc.delay if exc.delay is not None else runtime.config.retry_delay
    return None


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every handler of the operator into `registry`, and create its work queue."""

    async def _work(item: Item) -> float | None:
        return await work(runtime, item)

    runtime.queue = queue = WorkQueue(runtime.config.resync_seconds, _work, workers=CONCURRENT_RECONCILES,
                                      gate=runtime.may_act)

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, runtime)

    # Before Kopf's peering keep-alive and watch start (they start after the startup handlers): without the object
    # a replica with mandatory peering stays paused for ever. Retried until it succeeds.
    @kopf.on.startup(registry=registry)
    async def _ensure_peering(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        if await peering.ensure_peering(runtime.client, settings, runtime.config.retry_delay) is not None:
            logger.info("peering object %s %s is in place", peering.KIND, settings.peering.name)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return runtime.credentials()

    # The caches start before Kopf watches pipelines (after the startup handlers), so that the first reconciles
    # read from them; a kind not listed within the request timeout is read from the API until it is.
    @kopf.on.startup(registry=registry)
    async def _start_cache(logger: kopf.Logger, **_: Any) -> None:
        runtime.cache.start()
        if runtime.gate is not None:
            runtime.gate.start()
        if not await runtime.cache.wait_synced(runtime.config.request_timeout):
            waiting = [repr(i) for i in runtime.cache.informers.values() if not i.synced.is_set()]
            logger.warning("watch caches not listed yet (read from the API meanwhile): %s", ", ".join(waiting))

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await runtime.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, field="spec")
    async def _changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        await run_reconcile(runtime, body, logger, from_timer=False)

    # Every pipeline Kopf lists or watches goes into the work queue (resyncs, wake-ups) with its newest version,
    # compact; one being deleted or gone leaves it. Kopf delivers nothing while peering pauses this replica; the
    # queue then forgets every pipeline and learns them again from the list Kopf takes on resuming.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def _seen(body: kopf.Body, type: str | None, **_: Any) -> None:
        meta = body.get("metadata", {})
        uid = str(meta.get("uid"))
        if type == "DELETED" or meta.get("deletionTimestamp"):
            queue.untrack(uid)
            return
        runtime.remember(plain(body))
        queue.track(uid, (str(meta.get("namespace")), str(meta.get("name"))))
        # started here, not at start-up: the workers post Events and log to objects with kopf.event() and Kopf's
        # object loggers, which need the context Kopf gives its handlers (the tasks copy this one's)
        queue.start()

    # An event handler, not a change handler: Kopf leaves annotations under its own prefix (digest.dev/) out of the
    # diffs it hands to change handlers. Failed resolutions are retried by the resyncs.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=resolution_requested)
    async def _resolve_requested(body: kopf.Body, type: str | None, logger: kopf.Logger, **_: Any) -> None:
        if type != "DELETED":
            await run_reconcile(runtime, body, logger, from_timer=True)

    if runtime.config.webhook != "off":
        register_webhooks(registry, runtime)

    # Not optional: it keeps Kopf's finalizer (which the per-pipeline Kopf timer and daemon used to add), so a
    # deletion passes the replica that acts, as before; `_seen` has taken the pipeline out of the queue already.
    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def _deleted(meta: kopf.Meta, **_: Any) -> None:
        # Children go away by garbage collection (ownerReferences); only forget local state.
        runtime.metrics.forget_pipeline(str(meta.get("namespace")), str(meta.get("name")))
        runtime.forget(str(meta.get("uid")))


def _old_spec(old: kopf.Body | None) -> dict[str, Any] | None:
    """The stored spec of an UPDATE under admission (None on CREATE)."""
    if old is None:
        return None
    spec = plain(old).get("spec")
    return spec if isinstance(spec, dict) else None


def register_webhooks(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """The validating webhook (and with `webhook=mutate` the mutating one) for pipelines.

    Kopf serves them; their configurations (rules, matchConditions, failurePolicy, client config) are rendered by
    `admission.configuration` and written by `admission.WebhookServer`. A replica that stops leaves them in place for
    the replicas that keep serving.
    """
    operations: list[kopf.Operation] = ["CREATE", "UPDATE"]

    @kopf.on.validate(GROUP, VERSION, PLURAL, registry=registry, id=admission.VALIDATE_ID, operations=operations)
    def _validate(spec: kopf.Spec, warnings: list[str], **kwargs: Any) -> None:
        body = plain(spec)
        message = admission.denial(body, _old_spec(kwargs.get("old")))
        if message is not None:
            raise kopf.AdmissionError(message, code=400)
        note = admission.warning(body)
        if note is not None:
            warnings.append(note)

    if runtime.config.webhook != "mutate":
        return

    @kopf.on.mutate(GROUP, VERSION, PLURAL, registry=registry, id=admission.MUTATE_ID, operations=operations)
    async def _mutate(spec: kopf.Spec, patch: kopf.Patch, namespace: str | None, logger: kopf.Logger,
                      **kwargs: Any) -> None:
        body = plain(spec)
        image = admission.needs_pinning(body, _old_spec(kwargs.get("old")))
        if image is None:
            return
        names = [str(ref.get("name")) for ref in body.get("imagePullSecrets") or [] if isinstance(ref, dict)]
        try:
            credentials = await pull_credentials(runtime.client, namespace or "default", names, image)
            resolved = await runtime.registry.resolve(image, credentials)
        except (RegistryError, ApiError) as exc:
            logger.warning("not pinning %s at admission: %s", image, exc)
            return  # the validating webhook denies it, naming the fix
        patch.spec["image"] = f"{image.name}:{image.tag or 'latest'}@{resolved.digest}"
