"""The admission webhook: deny tag-only images under imagePolicy Require; optionally pin them at admission.

`denial`, `needs_pinning`, `warning` and the configuration renderers (`configuration`, `client_config`,
`serving_hosts`) are pure. `WebhookServer` is Kopf's HTTPS server with the certificates of `certs` (reloaded when
they change) that also writes the webhook configurations (`register`); the handlers are wired in
`handlers.register` when `DIGEST_OPERATOR_WEBHOOK` is `validate` or `mutate`.

Why the operator writes the configurations itself, not Kopf (`settings.admission.managed`): Kopf 1.45 renders
only rules, an objectSelector and the client config, and merge-patches the whole `webhooks` list on every restart,
so it cannot carry `matchConditions` (which keep the webhook out of metadata-only updates, finalizer removal
included), and it needs `create` on every webhook configuration. The client config itself follows Kopf's
contract (`clientConfig.service` or `url`, plus `caBundle`, the handler id as the last path segment).

Mutating mode (k8s-digester style) rewrites `spec.image: repo:tag` into `repo:tag@sha256:...` before it is stored,
for pipelines with imagePolicy Require: the stored spec itself is then pinned, so `kubectl get -o yaml`, backups
and GitOps diffs show the digest. Resolve and Track pipelines keep their tag (the operator resolves it). When the
registry cannot be reached the mutation leaves the image alone and the validating webhook denies it, with the
reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import kopf

from digest_api import GROUP, PLURAL, VERSION
from digest_api.imageref import ImageRef, parse_image
from digest_operator import certs
from digest_operator.config import OperatorConfig
from digest_operator.drift import in_sync
from digest_operator.k8s import ApiError, resource_path
from digest_operator.render.meta import MANAGED_BY, PART_OF, stamp_applied_hash

logger = logging.getLogger(__name__)

VALIDATE_ID = "image-pinned"
MUTATE_ID = "pin-image"
WEBHOOK_SUFFIX = "digest.dev"
ADMISSION_API = "admissionregistration.k8s.io/v1"
PLURALS = {"validating": "validatingwebhookconfigurations", "mutating": "mutatingwebhookconfigurations"}
KINDS = {"validating": "ValidatingWebhookConfiguration", "mutating": "MutatingWebhookConfiguration"}
Kind = Literal["validating", "mutating"]

MATCH_CONDITIONS: list[dict[str, str]] = [
    # A pipeline being deleted is never sent: deleting, and removing the finalizer, never depend on the webhook.
    {"name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)"},
    # Only creates and spec changes are sent: an update of metadata alone (finalizers, labels, annotations, Kopf's
    # bookkeeping) passes even while the operator is down. Such an update keeps the image, which the webhook would
    # admit anyway (`needs_pinning`).
    {"name": "creates-or-changes-the-spec",
     "expression": "request.operation == 'CREATE' || !has(object.spec) || !has(oldObject.spec) "
                   "|| object.spec != oldObject.spec"},
]
VALIDATE_TIMEOUT = 10
"""Seconds the API server waits for the validating webhook (a pure check, no registry call)."""
MUTATE_TIMEOUT = 30
"""Seconds for the mutating webhook, which asks the registry (at most 30 are allowed)."""
FILE_CHECK_INTERVAL = 2.0
"""How often Kopf's server looks for a changed certificate file (a hash of one small file)."""


def _policy_mode(spec: Mapping[str, Any]) -> str:
    policy = spec.get("imagePolicy")
    return str(policy.get("mode") or "Require") if isinstance(policy, Mapping) else "Require"


def needs_pinning(spec: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> ImageRef | None:
    """The tag-only image of a Require pipeline, which admission must pin or deny; else None.

    `old` is the stored spec on UPDATE: an update that leaves the image and the policy as they were (metadata, a
    finalizer, scaling) is let through, so a pipeline stored before the webhook existed can still be changed and
    deleted; the operator refuses its tag meanwhile.
    """
    try:
        image = parse_image(str(spec.get("image") or ""))
    except ValueError:
        return None  # the CRD schema reports malformed references
    if image.pinned or _policy_mode(spec) != "Require":
        return None
    if old is not None and old.get("image") == spec.get("image") and _policy_mode(old) == "Require":
        return None
    return image


def denial(spec: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> str | None:
    """The message for `kubectl apply` of a pipeline whose image must not be admitted, or None."""
    image = needs_pinning(spec, old)
    if image is None:
        return None
    tag = image.tag or "latest"
    return (
        f"spec.image {image} is not pinned by digest and spec.imagePolicy.mode is Require. "
        f"Pin it as {image.name}:{tag}@sha256:<digest> (the digest is printed by "
        f"`crane digest {image}` or `docker buildx imagetools inspect {image}`), "
        f"or set spec.imagePolicy.mode: Resolve to let the operator resolve the tag"
    )


def warning(spec: Mapping[str, Any]) -> str | None:
    """A note for `kubectl apply` of a tag that the operator will resolve (Resolve/Track), or None."""
    try:
        image = parse_image(str(spec.get("image") or ""))
    except ValueError:
        return None
    mode = _policy_mode(spec)
    if image.pinned or mode == "Require":
        return None
    return (f"spec.image {image} is a tag: the operator resolves it to a digest (imagePolicy {mode}); "
            f"see status.image.resolved")


def serving_hosts(config: OperatorConfig) -> list[str]:
    """The names (or IPs) the serving certificate must cover: the Service's DNS names, or the URL host."""
    service = config.webhook_service_ref
    if service is not None:
        namespace, name, _ = service
        return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    hosts = [h for h in (config.webhook_host, config.webhook_addr) if h and h not in ("0.0.0.0", "::")]
    return hosts or ["localhost"]


def client_config(config: OperatorConfig, ca: bytes, path: str = "") -> kopf.WebhookClientConfig:
    """How the API server reaches the webhook at `path`: through the Service (`clientConfig.service`, the
    Service's port), or at `https://HOST:PORT` (`url`); with the CA bundle that verifies the served certificate."""
    result: kopf.WebhookClientConfig = {}
    service = config.webhook_service_ref
    if service is not None:
        namespace, name, port = service
        result["service"] = {"namespace": namespace, "name": name, "port": port, "path": path or "/"}
    else:
        host = config.webhook_host or serving_hosts(config)[0]
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        result["url"] = f"https://{host}:{config.webhook_port}{path}"
    if ca:
        result["caBundle"] = base64.b64encode(ca).decode()
    return result


def _webhook(config: OperatorConfig, handler_id: str, ca: bytes, *, failure_policy: str,
             timeout: int) -> dict[str, Any]:
    return {
        "name": f"{handler_id}.{WEBHOOK_SUFFIX}",
        "clientConfig": dict(client_config(config, ca, f"/{handler_id}")),
        "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                   "resources": [PLURAL], "scope": "Namespaced"}],
        "matchConditions": [dict(c) for c in MATCH_CONDITIONS],
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": timeout,
        "admissionReviewVersions": ["v1"],
    }


def configuration(config: OperatorConfig, kind: Kind, ca: bytes) -> dict[str, Any]:
    """The Validating- or MutatingWebhookConfiguration named `webhook_configuration`, with `ca` as caBundle.

    The mutating one has no webhooks unless the mode is `mutate` (switching back to `validate` empties it).
    """
    webhooks: list[dict[str, Any]] = []
    if kind == "validating":
        webhooks.append(_webhook(config, VALIDATE_ID, ca, failure_policy=config.webhook_failure_policy,
                                 timeout=VALIDATE_TIMEOUT))
    elif config.webhook == "mutate":
        # fail open: when the registry or the operator is unreachable the image stays a tag, which the validating
        # webhook then denies
        mutating = _webhook(config, MUTATE_ID, ca, failure_policy="Ignore", timeout=MUTATE_TIMEOUT)
        webhooks.append({**mutating, "reinvocationPolicy": "Never"})
    return {
        "apiVersion": ADMISSION_API, "kind": KINDS[kind],
        "metadata": {"name": config.webhook_configuration,
                     "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": PART_OF}},
        "webhooks": webhooks,
    }


def registered_ca(live: Mapping[str, Any] | None) -> bytes:
    """The CA certificates in the caBundles of a live configuration (PEM)."""
    bundles = []
    for webhook in (live or {}).get("webhooks") or []:
        encoded = (webhook.get("clientConfig") or {}).get("caBundle")
        if encoded:
            with contextlib.suppress(ValueError):
                bundles.append(base64.b64decode(encoded))
    return b"".join(bundles)


class Api(certs.Api, Protocol):
    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        ...


async def register(client: Api, config: OperatorConfig, ca: bytes,
                   now: datetime.datetime | None = None) -> list[str]:
    """Write the webhook configurations that differ from their rendering; returns the kinds written.

    A missing one is created by server-side apply (so RBAC `create` can be limited to its name); an existing one is
    merge-patched, which replaces the whole `webhooks` list (fields another writer left, e.g. a `url` where a
    `service` belongs, do not survive). Every replica runs this with the same inputs: after the first, a no-op.
    The caBundle keeps registered CAs that are still valid (`certs.merge_ca_bundle`).
    """
    if not config.webhook_configuration:
        return []
    now = now or datetime.datetime.now(datetime.UTC)
    written: list[str] = []
    for kind in ("validating", "mutating"):
        plural, name = PLURALS[kind], config.webhook_configuration
        live = await client.get(ADMISSION_API, plural, None, name)
        bundle = certs.merge_ca_bundle(ca, registered_ca(live), now) if ca else b""
        desired = stamp_applied_hash(configuration(config, kind, bundle))
        if live is None and not desired["webhooks"]:
            continue
        if live is not None and in_sync(desired, live):
            continue
        if live is None:
            await client.apply(desired, plural)
        else:
            patch = {"metadata": {k: desired["metadata"][k] for k in ("labels", "annotations")},
                     "webhooks": desired["webhooks"]}
            await client.request("PATCH", resource_path(ADMISSION_API, plural, None, name),
                                 params={"fieldManager": config.field_manager}, body=patch,
                                 content_type="application/merge-patch+json")
        logger.info("webhook configuration %s %s %s", KINDS[kind], name, "created" if live is None else "updated")
        written.append(kind)
    return written


def cert_source(config: OperatorConfig, client: certs.Api, lifetime: certs.Lifetime = certs.DEFAULT_LIFETIME
                ) -> certs.Source:
    """Where the serving certificate comes from: a mounted directory (renewed by its issuer), the shared Secret, or
    this process (both renewed here, by `lifetime`)."""
    hosts = serving_hosts(config)
    if config.webhook_cert_dir:
        return certs.MountedCerts(Path(config.webhook_cert_dir))
    secret = config.webhook_cert_secret_ref
    if secret is not None:
        return certs.SecretCerts(client, secret[0], secret[1], hosts, lifetime=lifetime)
    return certs.LocalCerts(hosts, lifetime=lifetime)


RECOVERABLE = (certs.CertError, ApiError, ValueError, OSError)


class WebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS webhook server, fed from a `certs` source and keeping the webhook configurations current.

    Before serving: the certificate (retried until it can be had; the pod is not ready meanwhile). While serving,
    every `webhook_refresh_seconds`: the source is read again (and renews a certificate that is due, `lifetime`),
    the configurations are re-asserted with its CA bundle (drift repair; no write when in sync), and only then a new
    certificate is handed to Kopf's server, which restarts with it within FILE_CHECK_INTERVAL. The API server
    thus trusts a new CA before any replica serves a certificate from it.
    """

    def __init__(self, config: OperatorConfig, client: Callable[[], Api], workdir: Path,
                 lifetime: certs.Lifetime = certs.DEFAULT_LIFETIME) -> None:
        self.serving_file = workdir / "serving.pem"
        client_ca = config.webhook_client_ca_file
        super().__init__(addr=config.webhook_addr, port=config.webhook_port, certfile=str(self.serving_file),
                         pkeyfile=str(self.serving_file), file_check_interval=FILE_CHECK_INTERVAL,
                         verify_mode=ssl.CERT_REQUIRED if client_ca else None, verify_cafile=client_ca)
        self.config = config
        self.lifetime = lifetime
        self._client = client
        self._source: certs.Source | None = None
        self.bundle: certs.TLSBundle | None = None
        self.serving = asyncio.Event()
        """Set while the server listens (the operator's readiness waits for it)."""

    @property
    def source(self) -> certs.Source:
        if self._source is None:
            self._source = cert_source(self.config, self._client(), self.lifetime)
        return self._source

    def _use(self, bundle: certs.TLSBundle) -> None:
        if bundle != self.bundle:
            certs.write_serving_file(self.serving_file, bundle)
            self.bundle = bundle

    async def sync(self) -> None:
        """One refresh: read (renew) the certificate, register its CA, then serve it."""
        bundle = await self.source.load()
        await register(self._client(), self.config, bundle.ca)
        self._use(bundle)

    async def _first_certificate(self) -> None:
        delay = 1.0
        while True:
            try:
                self._use(await self.source.load())
                return
            except RECOVERABLE as exc:
                logger.error("admission webhook: no serving certificate yet (retrying in %.0f s): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.webhook_refresh_seconds)

    async def _refresh_forever(self) -> None:
        await self.serving.wait()
        delay = 1.0
        while True:
            try:
                await self.sync()
                delay = self.config.webhook_refresh_seconds
            except RECOVERABLE as exc:
                logger.error("admission webhook: certificate or configuration not updated (retrying in %.0f s): "
                             "%s", delay, exc)
                delay = min(delay * 2, self.config.webhook_refresh_seconds)
            await asyncio.sleep(delay)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        await self._first_certificate()
        refresher = asyncio.create_task(self._refresh_forever(), name="admission webhook refresh")
        try:
            async for _ in super().__call__(fn):
                self.serving.set()
                assert self.bundle is not None
                yield client_config(self.config, self.bundle.ca)
        finally:
            self.serving.clear()
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
