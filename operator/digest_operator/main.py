"""Running the operator: `digestctl operator` in production, `start_operator` in tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any, cast

import kopf

from digest_operator import admission, handlers
from digest_operator.config import ConfigError, OperatorConfig
from digest_operator.peering import own_identity
from digest_operator.probes import probe_app, serve_probes
from digest_operator.runtime import Runtime

logger = logging.getLogger("digest_operator")


@dataclass
class RunningOperator:
    runtime: Runtime
    tasks: Collection[asyncio.Task[None]]
    stop: asyncio.Event
    ready: asyncio.Event
    webhook: admission.WebhookServer | None = None
    """The admission webhook server, when `DIGEST_OPERATOR_WEBHOOK` is on."""


async def _ready_and_serving(running: RunningOperator, ready: asyncio.Event) -> None:
    """Set `ready` once Kopf is ready and, with the webhook on, the webhook server listens: the Service sends the
    API server's admission calls only to ready pods, so a starting replica gets none before it can answer them."""
    await running.ready.wait()
    if running.webhook is not None:
        await running.webhook.serving.wait()
    ready.set()


async def _spawn(
    runtime: Runtime, *, namespaces: list[str], peering: str | None, priority: int | None,
) -> RunningOperator:
    if peering is not None and namespaces:
        raise ValueError("peering with --namespace is not supported: run each namespaced operator --standalone")
    runtime.namespaces = tuple(namespaces)  # the watch caches watch what Kopf watches
    priority = random.randint(1, 2**30) if priority is None else priority
    identity = own_identity()
    # the work queue's resyncs and wake-ups follow Kopf's peering verdict, evaluated from the same object
    runtime.peering = None if peering is None else (peering, identity, priority)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime)
    settings = kopf.OperatorSettings()
    handlers.configure(settings, runtime)
    # With peering, start paused until the peering object is read: a new replica never acts before it knows
    # whether a higher-priority replica is alive (and a missing peering CRD pauses instead of running alone).
    settings.peering.mandatory = peering is not None
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        memo=kopf.Memo(),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        identity=cast(Any, identity),  # Kopf's Identity is a NewType of str, not exported
        stop_flag=stop,
        ready_flag=ready,
    )
    webhook = settings.admission.server
    return RunningOperator(runtime, tasks, stop, ready,
                           webhook if isinstance(webhook, admission.WebhookServer) else None)


@contextlib.asynccontextmanager
async def start_operator(
    runtime: Runtime, *, namespaces: list[str] | None = None, peering: str | None = None,
    priority: int | None = None, ignored: set[asyncio.Task[object]] | None = None,
) -> AsyncIterator[RunningOperator]:
    """Run an operator inside the current event loop until the context exits.

    Kopf cancels every task created after its start when it stops; tasks that exist before, and `ignored`, are
    left alone.
    """
    existing = set(asyncio.all_tasks()) | set(ignored or ())
    running = await _spawn(runtime, namespaces=namespaces or [], peering=peering, priority=priority)
    runner = asyncio.create_task(kopf.run_tasks(list(running.tasks), ignored=existing))
    try:
        yield running
    finally:
        running.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await runtime.close()


async def _main(namespaces: list[str], probe_port: int, peering: str | None) -> None:
    runtime = Runtime(config=OperatorConfig.from_env())
    alive = asyncio.Event()
    alive.set()
    existing = set(asyncio.all_tasks())
    running = await _spawn(runtime, namespaces=namespaces, peering=peering, priority=None)
    ready = asyncio.Event()
    readiness = asyncio.create_task(_ready_and_serving(running, ready), name="readiness")
    probes = await serve_probes(probe_app(runtime, ready, alive), "0.0.0.0", probe_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, running.stop.set)
    try:
        await kopf.run_tasks(list(running.tasks), ignored=existing)
    finally:
        alive.clear()
        readiness.cancel()
        await probes.cleanup()
        await runtime.close()


def run(*, namespaces: list[str], probe_port: int, peering: str | None, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    asyncio.run(_main(namespaces, probe_port, peering))
