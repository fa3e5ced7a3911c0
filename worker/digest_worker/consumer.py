"""The receive loop: bounded concurrency, lock renewal, settlement, systemic pause, reconnect, graceful drain."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    ServiceBusError,
)

from digest_worker.config import WorkerConfig
from digest_worker.context import MessageContext, message_context
from digest_worker.failures import Category, Failure, FailureError
from digest_worker.link import LinkTurns
from digest_worker.logs import log_context
from digest_worker.metrics import Metrics
from digest_worker.settlement import Action, Decision, Outcome, Result, backoff, decide

if TYPE_CHECKING:
    from digest_worker.processing import Processor

log = logging.getLogger(__name__)
RECEIVE_WAIT_SECONDS = 1.0  # receive call while nothing is in flight
# While work is in flight: a call that finds fewer messages than it asks for holds the link this long (plus one socket
# read) while settlements wait; a call that finds enough returns as soon as they arrive, whatever this is.
BUSY_RECEIVE_WAIT_SECONDS = 0.02
# How long one socket read of the receiver may block (the SDK's default is 0.2 s). A receive call that finds fewer
# messages than it asked for keeps reading until its wait is over, in reads of this length, and holds the link all
# along: with 0.2 s, a call with a 0.05 s wait on an emptying queue held it ~0.2 s while finished messages waited to
# settle; with 0.02 s, ~0.06 s. Measured (bench (c), 50 ms posts): 86-88 % of the bound before, 89-90 % after.
RECEIVER_SOCKET_TIMEOUT_SECONDS = 0.02
WATCHDOG_SECONDS = 60.0
SYSTEMIC_BACKOFF_CAP = 300.0
SETTLE_GONE = (MessageLockLostError, MessageAlreadySettled, MessageNotFoundError)

ClientFactory = Callable[[], ServiceBusClient]
Check = Callable[[], Awaitable[None]]


def receiver_options(config: WorkerConfig) -> dict[str, Any]:
    """Keyword arguments of `get_queue_receiver` (PEEK_LOCK, the SDK's default mode)."""
    return {"prefetch_count": config.prefetch, "socket_timeout": RECEIVER_SOCKET_TIMEOUT_SECONDS}


class _RenewalCounter:
    """Receiver stand-in given to `AutoLockRenewer.register`: forwards renewals one at a time and counts them.

    One at a time: azure-servicebus 7.15 fails concurrent management requests issued while the receiver's
    `$management` link is still opening ("Management Operation error occurred", then the handler shuts down and every
    settlement fails). The first renewals of a batch arrive together, so each renewal has the link alone.
    """

    def __init__(self, receiver: ServiceBusReceiver, metrics: Metrics, turns: LinkTurns) -> None:
        self._receiver = receiver
        self._metrics = metrics
        self._turns = turns

    async def renew_message_lock(self, message: Any, **kwargs: Any) -> Any:
        try:
            async with self._turns.exclusive(urgent=True):
                result = await self._receiver.renew_message_lock(message, **kwargs)
        except Exception:
            self._metrics.lock_renewals.labels("failed").inc()
            raise
        self._metrics.lock_renewals.labels("ok").inc()
        return result


class Consumer:
    def __init__(self, config: WorkerConfig, client_factory: ClientFactory, processor: Processor | None,
                 metrics: Metrics, systemic_check: Check) -> None:
        self.config = config
        self.client_factory = client_factory
        self.processor = processor  # None until the application has built it (before the gate opens)
        self.metrics = metrics
        self.systemic_check = systemic_check
        self.connected = False
        self.pause: Failure | None = None
        self._stopping = asyncio.Event()
        self._pause_requested = asyncio.Event()
        self._receiving_stopped = asyncio.Event()
        self._contexts: dict[asyncio.Task[None], MessageContext] = {}
        self._turns = LinkTurns()  # the current receiver: settlements share it; receive calls and renewals alone
        # awaited once connected, before the first receive call: the start-up checks run while the client connects
        self.gate: Callable[[], Awaitable[None]] | None = None

    # state

    @property
    def ready(self) -> bool:
        return self.connected and self.pause is None and not self._stopping.is_set()

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stopping: no new messages; draining in-flight work",
                     extra={"in_flight": len(self._contexts), "drain_seconds": self.config.drain_seconds})
        self._stopping.set()

    def request_pause(self, failure: Failure) -> None:
        if self.pause is None:
            log.error("systemic failure: pausing the worker", extra={"kind": failure.kind, "detail": failure.detail})
            self.metrics.systemic.labels(failure.kind).inc()
            self.metrics.paused.set(1)
        self.pause = failure
        self._pause_requested.set()

    # main loop

    async def run(self) -> None:
        failures_in_a_row = 0
        while not self._stopping.is_set():
            if self.pause is not None:
                await self._wait_out_pause()
                continue
            try:
                await self._consume()
                failures_in_a_row = 0
            except Exception as exc:  # ServiceBusError, OSError, a receiver shut down by the SDK, ...: reconnect
                self.connected = False
                failures_in_a_row += 1
                self.metrics.reconnects.inc()
                delay = backoff(failures_in_a_row, self.config.reconnect_backoff_seconds, 60.0, random.uniform(0.5, 1))
                log.warning("Service Bus connection failed; reconnecting", extra={
                    "error": f"{type(exc).__name__}: {str(exc)[:300]}", "retry_in_seconds": round(delay, 2)})
                await self._sleep(delay)
        log.info("stopped")

    async def _consume(self) -> None:
        cfg = self.config
        async with self.client_factory() as client:
            renewer = AutoLockRenewer(max_lock_renewal_duration=cfg.max_lock_renewal_seconds,
                                      on_lock_renew_failure=self._renew_failed)
            receiver = client.get_queue_receiver(cfg.queue, **receiver_options(cfg))
            async with receiver:
                inflight: set[asyncio.Task[None]] = set()
                # Received, lock held and renewed, not started yet: the next batch is received while the current one
                # is processed, and a finished task starts the next message at once (`_dispatch`), even while a
                # receive call is pending.
                backlog: collections.deque[Any] = collections.deque()
                self._turns = LinkTurns()
                renewals = _RenewalCounter(receiver, self.metrics, self._turns)
                self._receiving_stopped.clear()

                def dispatch(_finished: asyncio.Task[None] | None = None) -> None:
                    if _finished is not None:
                        inflight.discard(_finished)
                    while backlog and len(inflight) < cfg.concurrency and not self._stopping.is_set() \
                            and not self._pause_requested.is_set():
                        task = asyncio.create_task(self._handle(receiver, backlog.popleft()))
                        inflight.add(task)
                        task.add_done_callback(dispatch)

                try:
                    if self.gate is not None:
                        gate, self.gate = self.gate, None
                        await gate()
                    self.connected = True
                    log.info("receiving", extra={"queue": cfg.queue, "concurrency": cfg.concurrency})
                    drained = False  # the last busy receive call got fewer messages than it asked for
                    while not self._stopping.is_set() and not self._pause_requested.is_set():
                        room = 2 * cfg.concurrency - len(inflight) - len(backlog)
                        if room <= 0 or (backlog and room < (cfg.concurrency + 1) // 2):
                            await self._wait_any(inflight)  # enough work at hand: receive in batches, not one by one
                            continue
                        busy = bool(inflight or backlog)
                        if busy and drained:
                            # the queue looked empty: let in-flight work settle (a receive call would hold the link
                            # for its whole wait) before asking again
                            await self._wait_any(inflight, RECEIVE_WAIT_SECONDS)
                            drained = False
                            continue
                        # idle: ask for one message, returned as soon as it arrives (asking for more makes the SDK
                        # wait up to 0.2 s more for them); the next call, at once and short, asks for the rest (a
                        # burst after idleness is taken in batches from its first message on: scale from zero)
                        count = room if busy else 1
                        messages = await self._receive(receiver, count,
                                                       BUSY_RECEIVE_WAIT_SECONDS if busy else RECEIVE_WAIT_SECONDS)
                        drained = busy and len(messages) < count
                        for message in messages:
                            # received during a pause: give it back (this costs it one delivery attempt); received
                            # while stopping: process it like the rest of the in-flight work
                            if self._pause_requested.is_set():
                                await self._settle(receiver, message, Decision(Action.ABANDON), Result.SHUTDOWN)
                                continue
                            if cfg.max_lock_renewal_seconds > 0:
                                renewer.register(cast(ServiceBusReceiver, renewals), message)
                            if self._stopping.is_set():
                                task = asyncio.create_task(self._handle(receiver, message))
                                inflight.add(task)
                                task.add_done_callback(inflight.discard)
                            else:
                                backlog.append(message)
                        dispatch()
                finally:
                    self.connected = False
                    self._receiving_stopped.set()
                    # not started yet: give them back at once (another worker may take them), then drain the rest
                    await self._abandon_all(receiver, backlog)
                    await self._drain(inflight)
                    await renewer.close()

    async def _abandon_all(self, receiver: ServiceBusReceiver, backlog: collections.deque[Any]) -> None:
        messages = list(backlog)
        backlog.clear()
        if messages:
            log.info("giving back messages not started", extra={"count": len(messages)})
            await asyncio.gather(*(self._settle(receiver, m, Decision(Action.ABANDON), Result.SHUTDOWN)
                                   for m in messages))

    async def _receive(self, receiver: ServiceBusReceiver, count: int, wait: float) -> list[Any]:
        """One receive call (at most `wait` seconds), alone on the link, never cancelled: cancelling it breaks the
        receiver. A watchdog turns a hung call into a reconnect."""
        async with self._turns.exclusive():
            return list(await asyncio.wait_for(
                receiver.receive_messages(max_message_count=count, max_wait_time=wait), WATCHDOG_SECONDS))

    async def _wait_any(self, inflight: set[asyncio.Task[None]], at_most: float | None = None) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        pause = asyncio.ensure_future(self._pause_requested.wait())
        try:
            await asyncio.wait({*inflight, stop, pause}, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            pause.cancel()

    async def _drain(self, inflight: set[asyncio.Task[None]]) -> None:
        if not inflight:
            return
        timeout = self.config.drain_seconds
        log.info("draining", extra={"in_flight": len(inflight), "timeout_seconds": timeout})
        _done, pending = await asyncio.wait(set(inflight), timeout=timeout)
        # Not finished in time: abandon (by cancelling) what is still building; a post already on the wire is given
        # its own timeout so that its outcome gets recorded, instead of being posted again after a redelivery.
        sending = {t for t in pending if self._contexts.get(t, MessageContext(None, None, None)).phase == "sending"}
        for task in pending - sending:
            task.cancel()
        if pending - sending:
            await asyncio.wait(pending - sending)
        if sending:
            _done, late = await asyncio.wait(sending, timeout=self.config.teams_timeout_seconds + 5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _handle(self, receiver: ServiceBusReceiver, message: Any) -> None:
        ctx = message_context(message)
        task = asyncio.current_task()
        assert task is not None
        self._contexts[task] = ctx
        self.metrics.in_flight.inc()
        started = time.monotonic()
        with log_context(message_id=ctx.message_id, correlation_id=ctx.correlation_id,
                         delivery_count=ctx.delivery_count):
            settled = False
            try:
                try:
                    assert self.processor is not None
                    outcome = await self.processor.handle(message, ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug or an unclassified error: retry like a transient one
                    log.exception("unexpected error while processing")
                    outcome = Outcome(Result.FAILED, _unexpected(exc))
                decision = decide(outcome, ctx.delivery_count, self.config.max_delivery_count,
                                  self.config.teams_max_retry_after_seconds)
                if decision.pause and outcome.failure is not None:
                    self.request_pause(outcome.failure)
                    # abandon only once no receive call is pending, else the message comes straight back to us
                    await self._receiving_stopped.wait()
                if decision.delay:
                    await self._sleep(decision.delay)
                settled = True
                await self._settle(receiver, message, decision, outcome.result, outcome)
            except asyncio.CancelledError:  # the drain period is over: give the message back now
                if not settled:
                    await self._settle(receiver, message, Decision(Action.ABANDON), Result.SHUTDOWN)
                raise
            finally:
                self.metrics.in_flight.dec()
                self.metrics.duration.observe(time.monotonic() - started)
                self._contexts.pop(task, None)

    async def _settle(self, receiver: ServiceBusReceiver, message: Any, decision: Decision, result: Result,
                      outcome: Outcome | None = None) -> None:
        reason = decision.reason or result.value
        extra: dict[str, Any] = {"action": decision.action.value, "reason": reason}
        if outcome is not None and outcome.failure is not None:
            extra["failure"] = f"{outcome.failure.category.value}.{outcome.failure.kind}: {outcome.failure.detail}"
        if getattr(message, "auto_renew_error", None) is not None:
            extra["lock_renew_error"] = str(message.auto_renew_error)
        try:
            # Settlements run concurrently with each other but never during a receive call or a lock renewal on the
            # same receiver (see digest_worker.link: settling during a pending receive is ~20x slower).
            async with self._turns.shared():
                if decision.action is Action.COMPLETE:
                    await receiver.complete_message(message)
                elif decision.action is Action.DEAD_LETTER:
                    await receiver.dead_letter_message(message, reason=decision.reason,
                                                       error_description=decision.description)
                else:
                    await receiver.abandon_message(message)
            if decision.action is Action.COMPLETE:
                self.metrics.last_success.set(time.time())
        except SETTLE_GONE as exc:
            log.warning("settlement not possible; Service Bus will redeliver", extra={
                **extra, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            self.metrics.messages.labels("lock_lost", reason).inc()
            return
        except (ServiceBusError, OSError, ValueError) as exc:  # ValueError: the receiver was shut down
            log.warning("settlement failed; Service Bus will redeliver", extra={
                **extra, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            self.metrics.messages.labels("settle_failed", reason).inc()
            return
        self.metrics.messages.labels(_OUTCOME[decision.action], reason).inc()
        level = logging.INFO if decision.action is not Action.DEAD_LETTER else logging.WARNING
        log.log(level, "message settled", extra={**extra, "description": decision.description})

    async def _renew_failed(self, renewable: Any, error: Exception | None) -> None:
        log.warning("lock renewal stopped", extra={"message_id": str(getattr(renewable, "message_id", "")),
                                                   "error": str(error)[:300]})

    # systemic pause

    async def _wait_out_pause(self) -> None:
        attempt = 0
        while not self._stopping.is_set() and self.pause is not None:
            attempt += 1
            delay = backoff(attempt, self.config.systemic_backoff_seconds, SYSTEMIC_BACKOFF_CAP,
                            random.uniform(0.5, 1))
            await self._sleep(delay)
            if self._stopping.is_set():
                return
            try:
                await self.systemic_check()
            except FailureError as exc:
                log.warning("still paused", extra={"kind": exc.failure.kind, "detail": exc.failure.detail,
                                                   "retry_in_seconds": round(delay, 2)})
                self.pause = exc.failure
                continue
            log.info("systemic check passed: resuming", extra={"kind": self.pause.kind if self.pause else None})
            self.pause = None
            self._pause_requested.clear()
            self.metrics.paused.set(0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


_OUTCOME = {Action.COMPLETE: "completed", Action.ABANDON: "abandoned", Action.DEAD_LETTER: "dead_lettered"}


def _unexpected(exc: BaseException) -> Failure:
    return Failure(Category.TRANSIENT, "Unexpected", f"{type(exc).__name__}: {str(exc)[:300]}")
