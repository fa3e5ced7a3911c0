"""What one operator instance shares between its handlers: settings, the API client, metrics, per-object locks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import kopf

from digest_operator.config import OperatorConfig
from digest_operator.k8s import KubeClient
from digest_operator.metrics import OperatorMetrics


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
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

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

    def lock(self, uid: str) -> asyncio.Lock:
        """Serialises the change handlers and the timer of one pipeline."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
