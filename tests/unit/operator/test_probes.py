"""Probe endpoints: liveness fails when a Kopf root task has ended; readiness follows Kopf's ready flag."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from digest_operator.probes import probe_app
from digest_operator.runtime import Runtime


async def _status(client: TestClient, path: str) -> int:  # type: ignore[type-arg]
    response = await client.get(path)
    return response.status


async def test_probes() -> None:
    ready, alive = asyncio.Event(), asyncio.Event()
    alive.set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(stop.wait(), name="watcher")
    app = probe_app(Runtime(), ready, alive, [watcher])
    async with TestClient(TestServer(app)) as client:
        assert await _status(client, "/healthz") == 200
        assert await _status(client, "/readyz") == 503
        ready.set()
        assert await _status(client, "/readyz") == 200
        assert await _status(client, "/metrics") == 200
        stop.set()
        await watcher
        assert await _status(client, "/healthz") == 503
        assert await _status(client, "/readyz") == 200  # readiness is about Kopf's readiness only
