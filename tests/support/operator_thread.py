"""Run a real operator (the Kopf loop with our handlers) in its own thread and event loop.

Kopf cancels every task of its loop when it stops; a loop of its own keeps the test's loop (and the API emulator,
and a second operator) out of its reach.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf

from digest_operator.config import OperatorConfig
from digest_operator.main import start_operator
from digest_operator.runtime import Runtime

FAST = OperatorConfig(
    resync_seconds=0.5,
    request_timeout=5.0,
    watch_server_timeout=30.0,
    watch_client_timeout=35.0,
    retry_delay=0.3,
    error_backoffs=(0.05, 0.1, 0.2, 0.4),
    peering_lifetime=3,
)


class OperatorThread:
    def __init__(self, server: str, *, config: OperatorConfig = FAST, **start_kwargs: Any) -> None:
        self.runtime = Runtime(
            config=config,
            credentials=lambda: kopf.ConnectionInfo(server=server, default_namespace="default"),
        )
        self._kwargs = start_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop() and check()
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with start_operator(self.runtime, **self._kwargs) as running:
            await asyncio.wait_for(running.ready.wait(), timeout=30)
            self._started.set()
            await self._stop.wait()

    def start(self) -> OperatorThread:
        self._thread.start()
        if not self._started.wait(timeout=30):
            raise TimeoutError("operator did not become ready")
        self.check()
        return self

    def check(self) -> None:
        if self._error is not None:
            raise RuntimeError("operator failed") from self._error
        if not self._thread.is_alive() and self._started.is_set():
            raise RuntimeError("operator thread exited")

    def stop(self, timeout: float = 30) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("operator did not stop")
        if self._error is not None and not isinstance(self._error, asyncio.CancelledError):
            raise RuntimeError("operator failed") from self._error
