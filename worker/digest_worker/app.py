"""Wiring of the worker process: config → database, Teams, source, consumer; HTTP probes and metrics; signals."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from azure.servicebus.aio import ServiceBusClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from digest_worker.config import WorkerConfig
from digest_worker.consumer import Consumer
from digest_worker.db.store import Store
from digest_worker.failures import FailureError
from digest_worker.metrics import Metrics
from digest_worker.processing import Processor
from digest_worker.source import DigestSource, TableSource, load_source
from digest_worker.teams import TeamsDelivery
from digest_worker.teams_errors import status_class

log = logging.getLogger(__name__)


class WorkerApp:
    def __init__(self, config: WorkerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.store = Store.open(config.database_url)
        self.teams = TeamsDelivery(config, on_status=self._count_teams_status)
        self.source: DigestSource = load_source(config.source, self.store) if config.source else TableSource(self.store)
        self.processor = Processor(config, self.store, self.source, self.teams)
        self.consumer = Consumer(config, self._client, self.processor, self.metrics, self.systemic_check)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> ServiceBusClient:
        cfg = self.config
        if cfg.connection_string:
            return ServiceBusClient.from_connection_string(cfg.connection_string)
        from azure.identity.aio import DefaultAzureCredential

        assert cfg.namespace is not None
        return ServiceBusClient(cfg.namespace, DefaultAzureCredential())

    def _count_teams_status(self, status: int | None) -> None:
        self.metrics.teams_requests.labels(status_class(status)).inc()

    async def systemic_check(self) -> None:
        if self.config.database_migrate:
            await self.store.upgrade()
        await self.store.check_schema()
        await self.teams.check()

    # lifecycle

    async def start(self, check_while_connecting: bool = False) -> None:
        """Prepare the database and serve probes; a failure here starts the worker paused, not crashed.

        `check_while_connecting`: run the start-up check while the Service Bus client connects (scale-from-zero
        latency); no message is received before it has passed."""
        # The Bot Framework SDK posts through `requests` in the default executor (and tokens are fetched there):
        # size it for `concurrency` posts at once instead of the default min(32, cpus + 4).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=self.config.concurrency + 4, thread_name_prefix="digest-io"))
        await self._serve_http()
        if check_while_connecting:
            check = asyncio.create_task(self._startup_check())

            async def gate() -> None:
                await check

            self.consumer.gate = gate
        else:
            await self._startup_check()

    async def _startup_check(self) -> None:
        try:
            await self.systemic_check()
        except FailureError as exc:
            self.consumer.request_pause(exc.failure)

    async def run(self) -> None:
        try:
            self._task = asyncio.current_task()
            await self.consumer.run()
        finally:
            await self.close()

    def stop(self) -> None:
        self.consumer.stop()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.teams.close()
        await self.store.close()

    # HTTP: /metrics /healthz /readyz

    async def _serve_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self.config.metrics_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.metrics_port

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        alive = self._task is None or not self._task.done()
        return web.json_response({"alive": alive}, status=200 if alive else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        consumer = self.consumer
        body: dict[str, Any] = {"ready": consumer.ready, "connected": consumer.connected}
        if consumer.pause is not None:
            body["paused"] = {"kind": consumer.pause.kind, "detail": consumer.pause.detail}
        return web.json_response(body, status=200 if consumer.ready else 503)


async def serve(config: WorkerConfig) -> int:
    """Run until SIGTERM/SIGINT; drain; exit 0."""
    app = WorkerApp(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    await app.start(check_while_connecting=True)
    log.info("worker started", extra={"pipeline": config.pipeline, "queue": config.queue, "metrics_port": app.port})
    await app.run()
    return 0
