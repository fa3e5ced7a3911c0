"""What one operator instance shares between its handlers: settings, the API client and its watch caches, metrics,
per-object locks, the work queue (resyncs and wake-ups of pipelines whose children changed), the peering gate, and
the newest version of each pipeline seen."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf

from digest_operator.cache import Cache, CachingApi, PipelineKey, WatchSettings, newer_version
from digest_operator.config import OperatorConfig
from digest_operator.k8s import KubeClient
from digest_operator.metrics import OperatorMetrics
from digest_operator.peering import PeeringGate
from digest_operator.pinning import Backoff
from digest_operator.registry import RegistryClient
from digest_operator.workqueue import WorkQueue

CONCURRENT_RECONCILES = 16
"""At most this many reconciles at once: half the client's connections (each reconcile's requests are sequential
but for the reads of children the cache lacks, made together), so none waits long for a connection. Time to Ready
is set by the rollouts (kube-controller-manager's client rate limit), not by this; each reconcile in flight holds
its children and renderings, each connection its TLS buffers (bench/README.md, operator scale)."""


def default_credentials() -> kopf.ConnectionInfo:
    """In-cluster service account first, then the local kubeconfig (like kubectl)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
    return info


@dataclass
class Runtime:
    config: OperatorConfig = field(default_factory=OperatorConfig)
    credentials: Callable[[], kopf.ConnectionInfo] = default_credentials
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    namespaces: tuple[str, ...] = ()
    """The namespaces the operator watches (none: the whole cluster); the caches watch the same."""
    reconcile_count: int = 0
    wake_count: int = 0
    """Pipelines woken by a change of their children (see `wake`)."""
    peering: tuple[str, str, int] | None = None
    """(peering object name, own identity, priority) with Kopf peering; None: standalone."""
    queue: WorkQueue | None = None
    """Resyncs and wake-ups (set by `handlers.register`)."""
    kopf_settings: kopf.OperatorSettings | None = None
    """Kopf's settings (for the object loggers of the work queue's reconciles)."""
    _client: KubeClient | None = None
    _cache: Cache | None = None
    _gate: PeeringGate | None = None
    _registry: RegistryClient | None = None
    _workdir: tempfile.TemporaryDirectory[str] | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _reconciled_at: dict[str, float] = field(default_factory=dict)
    _reconciles: dict[str, int] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENT_RECONCILES))
    """Reconciles running at once (see CONCURRENT_RECONCILES)."""
    _latest: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient(
                self.credentials,
                field_manager=self.config.field_manager,
                request_timeout=self.config.request_timeout,
                observer=self.metrics.observe_request,
            )
        return self._client

    @property
    def cache(self) -> Cache:
        """The watch caches of the operator's own objects (started by a startup handler)."""
        if self._cache is None:
            self._cache = Cache(self.client, namespaces=self.namespaces, on_change=self.wake,
                                settings=self._watch_settings())
        return self._cache

    def _watch_settings(self) -> WatchSettings:
        config = self.config
        return WatchSettings(
            server_timeout=max(1, round(config.watch_server_timeout)), client_timeout=config.watch_client_timeout,
            backoffs=tuple(config.error_backoffs) or (1.0,), retry_unavailable=config.retry_delay * 4)

    @property
    def gate(self) -> PeeringGate | None:
        """Kopf peering's verdict for this replica, from the peering object (None: standalone, always acting)."""
        if self._gate is None and self.peering is not None:
            name, identity, priority = self.peering
            self._gate = PeeringGate(self.client, name, identity, priority, self._watch_settings(),
                                     on_change=self._gate_changed)
        return self._gate

    def may_act(self) -> bool:
        gate = self.gate
        return gate is None or gate()

    def _gate_changed(self) -> None:
        if self.queue is not None:
            self.queue.gate_changed()

    @property
    def api(self) -> CachingApi:
        """The reconcile's API: writes (and fresh reads) through the client, written objects into the cache."""
        return CachingApi(self.client, self.cache)

    @property
    def registry(self) -> RegistryClient:
        if self._registry is None:
            self._registry = RegistryClient(insecure_hosts=self.config.insecure_registries,
                                            timeout=self.config.registry_timeout,
                                            ca_file=self.config.registry_ca_file,
                                            allowed_registries=self.config.allowed_registries,
                                            token_hosts=self.config.registry_token_hosts)
        return self._registry

    @property
    def webhook_dir(self) -> Path:
        """Where the webhook's generated certificates live (private to this process)."""
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="digest-operator-webhook-")
        return Path(self._workdir.name)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.config.resolve_backoff, self.config.resolve_backoff_max)

    def lock(self, uid: str) -> asyncio.Lock:
        """Serialises the reconciles of one pipeline (Kopf's handlers and the work queue's)."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def mark_reconciled(self, uid: str) -> None:
        self._reconciled_at[uid] = time.monotonic()
        self._reconciles[uid] = self._reconciles.get(uid, 0) + 1

    def reconciles_of(self, uid: str) -> int:
        """Reconciles of the pipeline `uid` that ran to the end (status written), in this process."""
        return self._reconciles.get(uid, 0)

    def resync_due(self, uid: str) -> bool:
        """A resync is needed only if nothing else reconciled the pipeline within most of the interval."""
        last = self._reconciled_at.get(uid)
        return last is None or time.monotonic() - last >= 0.9 * self.config.resync_seconds

    def wake(self, key: PipelineKey) -> None:
        """A child, pod or Job of the pipeline changed (the cache calls this): reconcile it soon."""
        if self.queue is not None and self.queue.wake(key):
            self.wake_count += 1

    def remember(self, body: dict[str, Any] | None, *, keep: bool = True) -> None:
        """A version of a pipeline, if newer than the one held: with `keep` (the answer of our status write, which
        Kopf's watch brings only later) its content too, compact, else only that it exists."""
        meta = (body or {}).get("metadata") or {}
        uid, version = meta.get("uid"), str(meta.get("resourceVersion") or "")
        if body is None or not uid:
            return
        held = self._latest.get(str(uid))
        if held is None or newer_version(version, held[0]) or (keep and held[1] is None and version == held[0]):
            data = None
            if keep:
                meta = {k: v for k, v in meta.items() if k != "managedFields"}
                data = json.dumps({**body, "metadata": meta}, separators=(",", ":")).encode()
            self._latest[str(uid)] = (version, data)

    def latest(self, uid: str) -> dict[str, Any] | None:
        """The newest version of the pipeline `uid` held whole (None: none, or only its version)."""
        held = self._latest.get(uid)
        found: dict[str, Any] | None = json.loads(held[1]) if held is not None and held[1] is not None else None
        return found

    def freshest(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The newest version known of the pipeline `body` (a trigger's copy, or what we wrote since); None when
        that is not at hand or versions cannot be compared (not etcd's integers): then read it."""
        version = str(body["metadata"].get("resourceVersion") or "")
        held = self._latest.get(str(body["metadata"]["uid"]))
        if not version.isdigit() or (held is not None and not held[0].isdigit()):
            return None
        if held is not None and newer_version(held[0], version):
            found: dict[str, Any] | None = json.loads(held[1]) if held[1] is not None else None
            return found
        self.remember(body, keep=False)
        return body

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._reconciled_at.pop(uid, None)
        self._reconciles.pop(uid, None)
        self._latest.pop(uid, None)

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        if self._gate is not None:
            await self._gate.close()
            self._gate = None
        if self._cache is not None:
            await self._cache.close()
            self._cache = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        if self._client is not None:
            await self._client.close()
            self._client = None
