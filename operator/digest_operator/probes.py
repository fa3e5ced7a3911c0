"""`/healthz`, `/readyz` and `/metrics` on one port."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from digest_operator.runtime import Runtime


def probe_app(
    runtime: Runtime, ready: asyncio.Event, alive: asyncio.Event, tasks: Collection[asyncio.Task[Any]] = (),
) -> web.Application:
    """`alive` is cleared at shutdown; `tasks` are Kopf's root tasks, which run until the operator stops: one that
    has ended (a crashed watcher or reactor) makes the liveness probe fail so that Kubernetes restarts the pod."""

    async def healthz(_: web.Request) -> web.Response:
        crashed = [task.get_name() for task in tasks if task.done()]
        if crashed:
            return web.Response(status=503, text=f"stopped: {', '.join(crashed)}\n")
        return web.Response(text="ok\n") if alive.is_set() else web.Response(status=503, text="stopping\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set() and alive.is_set():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="starting\n")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(runtime.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_probes(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
