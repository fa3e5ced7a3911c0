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

`PeeringGate` tells the reconciles the operator starts itself (the work queue's resyncs and wake-ups) whether Kopf
peering lets this replica act: Kopf 1.45 pauses its own watches and handlers but does not expose that state.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kopf

from digest_operator.cache import Informer, Kind, WatchClient, WatchSettings
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


def own_identity() -> str:
    """This replica's key in the peering object's status, in Kopf's own form: `POD_ID` if set, else
    `user@host/started/random` (in a pod, the host name is the pod's name)."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a UID without a passwd entry
        user = str(os.getuid())
    started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f"{user}@{socket.gethostname()}/{started}/{secrets.token_hex(2)}"


def _seen_at(value: object, now: datetime.datetime) -> datetime.datetime:
    if not isinstance(value, str):
        return now  # Kopf counts a peer without `lastseen` as seen now
    try:
        seen = datetime.datetime.fromisoformat(value)
    except ValueError:
        return now
    return seen if seen.tzinfo is not None else seen.replace(tzinfo=datetime.UTC)


def paused(status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime.datetime) -> bool:
    """Kopf's rule for a replica without shard selectors (`process_peering_event` in kopf/_core/engines/peering.py):
    paused while another live peer in the peering object's status has a priority at least ours. A peer is live until
    its `lastseen` plus its `lifetime` seconds."""
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            lifetime, other = int(info.get("lifetime", 60)), int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if _seen_at(info.get("lastseen"), now) + datetime.timedelta(seconds=lifetime) <= now:
            continue  # dead
        if other >= priority:
            return True
    return False


class PeeringGate:
    """Whether this replica may act, from its own watch of the peering objects: closed until the object named
    `name` has been listed (Kopf's mandatory peering starts paused until then too), then open while `paused` says
    no. Re-evaluated on every call, so a peer that dies silently stops counting at its deadline."""

    def __init__(self, client: WatchClient, name: str, identity: str, priority: int, settings: WatchSettings,
                 on_change: Callable[[], None]) -> None:
        self.name, self.identity, self.priority = name, identity, priority
        kind = Kind(API_VERSION, PLURAL, selector="")
        self.informer = Informer(client, kind, None, lambda _kind, _change: on_change(), settings)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.informer.run(), name=f"peering gate {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __call__(self) -> bool:
        if self.informer.state != "ready":
            return False
        found = self.informer.store.get(None, self.name)
        if found is None:
            return False
        return not paused(found.get("status"), self.identity, self.priority, datetime.datetime.now(datetime.UTC))
