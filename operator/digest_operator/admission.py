"""The admission webhook: deny tag-only images under imagePolicy Require; optionally pin them at admission.

`denial` and `needs_pinning` are pure. The webhook server (Kopf's, TLS with `certs`) and the handlers are wired in
`handlers.register` when `DIGEST_OPERATOR_WEBHOOK` is `validate` or `mutate`.

Mutating mode (k8s-digester style) rewrites `spec.image: repo:tag` into `repo:tag@sha256:...` before it is stored,
for pipelines with imagePolicy Require: the stored spec itself is then pinned, so `kubectl get -o yaml`, backups
and GitOps diffs show the digest. Resolve and Track pipelines keep their tag (the operator resolves it). When the
registry cannot be reached the mutation leaves the image alone and the validating webhook denies it, with the
reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from digest_operator import certs
from digest_operator.api.imageref import ImageRef, parse_image
from digest_operator.config import OperatorConfig

VALIDATE_ID = "image-pinned"
MUTATE_ID = "pin-image"


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


def server(config: OperatorConfig, workdir: Path) -> kopf.WebhookServer:
    """Kopf's HTTPS webhook server with mounted certificates (`webhookCertDir`) or ones made here."""
    hosts = [h for h in (config.webhook_host, config.webhook_addr) if h and h not in ("0.0.0.0", "::")]
    hosts = hosts or ["localhost"]
    if config.webhook_cert_dir:
        files = certs.CertFiles.in_dir(Path(config.webhook_cert_dir))
    else:
        files = certs.ensure(workdir, hosts)
    return kopf.WebhookServer(
        addr=config.webhook_addr, port=config.webhook_port, host=config.webhook_host or hosts[0],
        certfile=str(files.cert), pkeyfile=str(files.key),
        # Without a ca.crt (a self-managed registration), Kopf offers the serving certificate as the CA bundle.
        cafile=str(files.ca) if files.ca.is_file() else None,
    )
