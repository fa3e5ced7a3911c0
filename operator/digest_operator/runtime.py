"""What one operator instance shares between its handlers: settings, the API client, metrics, per-object locks."""

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

from digest_operator.config import OperatorConfig
from digest_operator.k8s import KubeClient
from digest_operator.metrics import OperatorMetrics
from digest_operator.pinning import Backoff
from digest_operator.registry import RegistryClient


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
    reconcile_count: int = 0
    _client: KubeClient | None = None
    _registry: RegistryClient | None = None
    _workdir: tempfile.TemporaryDirectory[str] | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _reconciled_at: dict[str, float] = field(default_factory=dict)
    _worker_seen: dict[tuple[str, str], str] = field(default_factory=dict)

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
        """Serialises the change handlers and the timer of one pipeline."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def mark_reconciled(self, uid: str) -> None:
        self._reconciled_at[uid] = time.monotonic()

    def resync_due(self, uid: str) -> bool:
        """A resync is needed only if nothing else reconciled the pipeline within most of the interval."""
        last = self._reconciled_at.get(uid)
        return last is None or time.monotonic() - last >= 0.9 * self.config.resync_seconds

    def worker_changed(self, namespace: str, name: str, deployment: dict[str, Any]) -> bool:
        """Did anything the status reports change since the last look at this worker Deployment?"""
        relevant = json.dumps(
            [deployment.get("metadata", {}).get("generation"), deployment.get("spec", {}).get("replicas"),
             deployment.get("status")], sort_keys=True,
        )
        if self._worker_seen.get((namespace, name)) == relevant:
            return False
        self._worker_seen[(namespace, name)] = relevant
        return True

    def forget_worker(self, namespace: str, name: str) -> None:
        self._worker_seen.pop((namespace, name), None)

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._reconciled_at.pop(uid, None)

    async def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        if self._client is not None:
            await self._client.close()
            self._client = None
