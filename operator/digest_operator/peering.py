"""The operator's Kopf peering object: created by the operator at start-up, not shipped in the installation.

A ClusterKopfPeering in `manifests/` would be a custom resource applied together with its own CRD, which
`kubectl apply -k` refuses on a fresh cluster (`no matches for kind "ClusterKopfPeering"`: the CRD is not established
yet when the object is sent). The installation therefore ships only the CRD, and the operator applies the object.

Why at start-up: Kopf (1.45) neither creates a missing peering object nor fails on one. Its keep-alive PATCH gets
404 and is skipped silently, and with mandatory peering (`--peering NAME`) every replica starts paused until it has
seen the object: without it the operator would stay paused forever, doing nothing. Kopf runs the startup handlers
before any of its root tasks (discovery, the peering keep-alive and watch, the resource watches), so an object
applied by a startup handler is there before the first keep-alive. A failed apply (e.g. the peering CRD not yet
served, or RBAC) is retried by Kopf, and the operator does not report ready until it succeeded.
"""

from __future__ import annotations

from typing import Any, Protocol

import kopf

from digest_operator.k8s import ApiError

API_VERSION = "kopf.dev/v1"
KIND = "ClusterKopfPeering"
PLURAL = "clusterkopfpeerings"


class Applier(Protocol):
    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        ...


def peering_object(settings: kopf.OperatorSettings) -> dict[str, Any] | None:
    """The ClusterKopfPeering this operator's replicas share, or None when nothing is to be created.

    None: standalone (no peering), optional peering (Kopf auto-detects an existing object; creating one would switch
    peering on) and namespace-bound peering (KopfPeering objects; `digestctl operator` refuses --namespace without
    --standalone).
    """
    peering = settings.peering
    if peering.standalone or not peering.mandatory or not peering.clusterwide:
        return None
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": peering.name}}


def failure_message(name: str, exc: ApiError) -> str:
    """Why the peering object could not be applied, and what to do about it."""
    what = f"cannot apply the {KIND} {name!r}"
    if exc.not_served:
        return (f"{what}: the API server does not serve {API_VERSION} {KIND}: is the CRD {PLURAL}.kopf.dev "
                f"(manifests/peering) installed? Retrying")
    if exc.status == 403:
        return (f"{what}: {exc.status} {exc.reason}: {exc.message}; the operator's ClusterRole needs create and "
                f"patch on {PLURAL} named {name!r} (manifests/rbac/role.yaml). Retrying")
    return f"{what}: {exc.status} {exc.reason}: {exc.message}. Retrying"


async def ensure_peering(api: Applier, settings: kopf.OperatorSettings, retry_delay: float) -> dict[str, Any] | None:
    """Server-side apply the peering object (creating it if missing; an existing one and its status are left as
    they are: only the name is applied). Raises `kopf.TemporaryError` on API errors, so that Kopf retries."""
    obj = peering_object(settings)
    if obj is None:
        return None
    try:
        return await api.apply(obj, PLURAL)
    except ApiError as exc:
        raise kopf.TemporaryError(failure_message(settings.peering.name, exc), delay=retry_delay) from exc
