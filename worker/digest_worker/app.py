"""Wiring of the worker process: config → database, Teams, source, consumer; HTTP probes and metrics; signals.

Scale-from-zero latency: the process imports only what connecting to Service Bus needs, starts connecting, and
meanwhile imports the rest in a thread (`import_runtime`: database, Teams/Bot Framework, request model, HTTP
server); the consumer receives nothing before those are built and the start-up check has passed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from azure.servicebus.aio import ServiceBusClient

from digest_worker.config import WorkerConfig
from digest_worker.consumer import Consumer
from digest_worker.failures import FailureError
from digest_worker.metrics import Metrics

if TYPE_CHECKING:
    from aiohttp import web

    from digest_worker.db.store import Store
    from digest_worker.processing import Processor
    from digest_worker.source import DigestSource
    from digest_worker.teams import TeamsDelivery

log = logging.getLogger(__name__)


def import_runtime() -> None:
    """Import (and warm up) everything processing a message needs; run in a thread while Service Bus connects."""
    import aiohttp.web  # noqa: F401

    import digest_worker.processing
    import digest_worker.source  # noqa: F401
    from digest_worker.db import store

    store.warm_up()


class WorkerApp:
    store: Store
    teams: TeamsDelivery
    source: DigestSource
    processor: Processor

    def __init__(self, config: WorkerConfig, metrics: Metrics | None = None, *, build: bool = True) -> None:
        """`build=False`: the database, Teams and source objects are built by `start` (after `import_runtime`)."""
        self.config = config
        self.metrics = metrics or Metrics()
        self.consumer = Consumer(config, self._client, None, self.metrics, self.systemic_check)
        self._built = False
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._task: asyncio.Task[None] | None = None
        if build:
            self._build()

    def _build(self) -> None:
        from digest_worker.db.store import Store
        from digest_worker.processing import Processor
        from digest_worker.source import TableSource, load_source
        from digest_worker.teams import TeamsDelivery

        config = self.config
        self.store = Store.open(config.database_url)
        self.teams = TeamsDelivery(config, on_status=self._count_teams_status)
        self.source = load_source(config.source, self.store) if config.source else TableSource(self.store)
        self.processor = Processor(config, self.store, self.source, self.teams)
        self.consumer.processor = self.processor
        self._built = True

    def _client(self) -> ServiceBusClient:
        cfg = self.config
        if cfg.connection_string:
            return ServiceBusClient.from_connection_string(cfg.connection_string)
        from azure.identity.aio import DefaultAzureCredential

        assert cfg.namespace is not None
        return ServiceBusClient(cfg.namespace, DefaultAzureCredential())

    def _count_teams_status(self, status: int | None) -> None:
        from digest_worker.teams_errors import status_class

        self.metrics.teams_requests.labels(status_class(status)).inc()

    async def systemic_check(self) -> None:
        if self.config.database_migrate:
            await self.store.upgrade()
        await self.store.check_schema()
        await self.teams.check()

    # lifecycle

    async def start(self, check_while_connecting: bool = False, runtime: Awaitable[None] | None = None) -> None:
        """Prepare the database and serve probes; a failure here starts the worker paused, not crashed.

        `check_while_connecting`: run the start-up check while the Service Bus client connects (scale-from-zero
        latency); no message is received before it has passed. `runtime`: the imports still under way (an app made
        with `build=False`); building, serving probes and the check then all wait for them, off the connect path."""
        # Lock renewals and token fetches run in the default executor: size it for `concurrency` at once.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=self.config.concurrency + 4, thread_name_prefix="digest-io"))
        if runtime is not None:
            async def prepare() -> None:
                await runtime
                if not self._built:
                    self._build()
                await self._serve_http()
                await self._startup_check()

            check = asyncio.create_task(prepare())
        elif check_while_connecting:
            await self._serve_http()
            check = asyncio.create_task(self._startup_check())
        else:
            await self._serve_http()
            await self._startup_check()
            return

        async def gate() -> None:
            await check

        self.consumer.gate = gate

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
        if self._built:
            await self.teams.close()
            await self.store.close()

    # HTTP: /metrics /healthz /readyz

    async def _serve_http(self) -> None:
        from aiohttp import web

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
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        alive = self._task is None or not self._task.done()
        return web.json_response({"alive": alive}, status=200 if alive else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        consumer = self.consumer
        body: dict[str, Any] = {"ready": consumer.ready, "connected": consumer.connected}
        if consumer.pause is not None:
            body["paused"] = {"kind": consumer.pause.kind, "detail": consumer.pause.detail}
        return web.json_response(body, status=200 if consumer.ready else 503)


async def serve(config: WorkerConfig) -> int:
    """Run until SIGTERM/SIGINT; drain; exit 0."""
    app = WorkerApp(config, build=False)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    await app.start(check_while_connecting=True, runtime=loop.run_in_executor(None, import_runtime))
    log.info("worker started", extra={"pipeline": config.pipeline, "queue": config.queue,
                                      "metrics_port": config.metrics_port})
    await app.run()
    return 0


def run(environ: Mapping[str, str]) -> int:
    """The worker process (`digestctl worker`, `python -m digest_worker`): configure from `DIGEST_*` variables and
    serve until stopped; 1 if the configuration is invalid."""
    import sys

    from digest_worker import logs
    from digest_worker.config import ConfigError, load

    try:
        config = load(environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.setup(config.log_level)
    return asyncio.run(serve(config))
