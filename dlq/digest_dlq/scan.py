"""The lock-scan-and-act data path of requeue, park and purge, on `azure.servicebus.aio`.

Order per message is always: receive under lock → send the copy → only then complete the original. A message whose
send failed, whose copy does not fit, or that is not selected is never completed; its lock is released at the end
(abandon). What the aio SDK buys: once a page's copies are sent, the originals of every sent batch are completed
concurrently (bounded by `ActOptions.settle_concurrency`), so a settlement round trip per message no longer
serialises the run. Everything runs on one event loop; `run` is the synchronous entry point the operations call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from azure.servicebus import ServiceBusMessageBatch, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusConnectionError,
    ServiceBusError,
)

from digest_dlq import lanes
from digest_dlq.batching import pack
from digest_dlq.bus import LOCK_SAFETY_SECONDS, Act, ActOptions, Chooser, Endpoint, from_received, to_amqp
from digest_dlq.message import DlqMessage
from digest_dlq.policy import RateLimiter
from digest_dlq.report import Outcome

log = logging.getLogger("digest.dlq")

LOCK_LOST = "lock lost after send (original not completed)"
RECEIVER_SOCKET_TIMEOUT = 0.02
LANE_POLL = 0.05
"""Seconds per empty receive of a lane among several (`_receive_among_lanes`)."""
Item = tuple[ServiceBusReceivedMessage, DlqMessage, Act]


def run(endpoint: Endpoint, client_options: dict[str, Any], queue: str, choose: Chooser,
        options: ActOptions) -> Outcome:
    """`act` from synchronous code (the CLI, the monitor job), on uvloop where it is installed; with more than one
    lane, each lane in a forked process where the platform can fork (`lanes`)."""
    if options.lanes > 1 and lanes.can_fork():
        def body(tally: lanes.SharedTally) -> Outcome:
            lane_options = dataclasses.replace(options, on_progress=tally.progress, limiter=_lane_limiter(options))
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                return runner.run(_lane(endpoint, client_options, queue, _Scan(choose, lane_options, tally)))

        return merge(lanes.run_forked(options.lanes, body, options.on_progress))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(act(endpoint, client_options, queue, choose, options))


def _lane_limiter(options: ActOptions) -> RateLimiter | None:
    """Each of N forked lanes gets 1/N of the rate (lanes on one loop share one limiter)."""
    limiter = options.limiter
    return None if limiter is None else RateLimiter(limiter.rate / max(1, options.lanes))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where installed (the SDK's pure-Python AMQP stack makes the client CPU-bound; uvloop takes
    the event loop's own share of it off), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@contextlib.asynccontextmanager
async def aio_client(endpoint: Endpoint, **kwargs: Any) -> AsyncIterator[ServiceBusClient]:
    """An aio client for `endpoint` (its credential, when it opens one, is closed with it)."""
    if endpoint.connection_string:
        async with ServiceBusClient.from_connection_string(endpoint.connection_string, **kwargs) as client:
            yield client
        return
    if not endpoint.namespace:
        raise ValueError("give --namespace or --connection-string")
    from azure.identity.aio import DefaultAzureCredential

    async with DefaultAzureCredential() as credential, \
            ServiceBusClient(endpoint.namespace, credential, **kwargs) as client:
        yield client


class _Scan:
    """What the lanes of one scan share: the sequence numbers seen (per process), the tally (highest sequence number
    seen, acted count: shared memory across forked lanes), the chooser."""

    def __init__(self, choose: Chooser, options: ActOptions, tally: lanes.Tally | None = None) -> None:
        self._choose = choose
        self.options = options
        self.tally = tally or lanes.Tally(max(1, options.lanes))

    @property
    def max_seen(self) -> int:
        return self.tally.max_seen

    def remaining(self) -> int | None:
        stop = self.options.stop_after
        return None if stop is None else max(stop - self.tally.acted, 0)

    def claim(self, received: ServiceBusReceivedMessage) -> tuple[DlqMessage | None, Act | None]:
        """(message, decision); message None when this sequence number was already seen (the scan has cycled)."""
        seq = int(received.sequence_number or 0)
        if seq in self.options.seen:
            return None, None
        self.options.seen.add(seq)
        self.tally.see(seq)
        message = from_received(received)
        decision = None if self.remaining() == 0 else self._choose(message)
        if decision is not None and not self.tally.act(self.options.stop_after):
            decision = None  # a sibling lane took the last of `stop_after` meanwhile
        return message, decision


async def act(endpoint: Endpoint, client_options: dict[str, Any], queue: str, choose: Chooser,
              options: ActOptions) -> Outcome:
    """Lock-scan the dead-letter queue: act on chosen messages, hold the others, release everything at the end.

    `options.lanes` scans run concurrently, each on its own connection (competing consumers of the DLQ). A lane
    stops when a peek finds nothing beyond the highest sequence number seen (checked after every page, instead of
    waiting for an empty receive), when the DLQ stays empty for `max_wait_time`, when it receives a message already
    seen (everything left is locked by this scan), or after `stop_after` acted messages. Messages below that
    sequence number that another consumer holds are not waited for.
    """
    scan = _Scan(choose, options)
    return merge(await asyncio.gather(*(_lane(endpoint, client_options, queue, scan)
                                        for _ in range(max(1, options.lanes)))))


def merge(outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome of the lanes' outcomes."""
    if len(outcomes) == 1:
        return outcomes[0]
    merged = Outcome()
    for item in outcomes:
        merged.requeued += item.requeued
        merged.parked += item.parked
        merged.purged += item.purged
        merged.skipped += item.skipped
        merged.left.update(item.left)
        merged.failed.update(item.failed)
        merged.errors += [e for e in item.errors if e not in merged.errors]
    return merged


def handler_options(options: ActOptions) -> dict[str, Any]:
    """Keyword arguments for every handler of a scan.

    `keep_alive=None` (a configuration keyword the SDK reads from every handler's kwargs, not in its docstrings):
    without it each handler runs a keep-alive task that sleeps in 1 s steps and `close` waits for it, so every run
    ended on the next whole second after its open (0.5 s lost on average). A scan is never idle long enough to need
    it (the service drops a connection after 240 s idle), except one paced by a rate limiter, which keeps it.
    """
    return {} if options.limiter is not None else {"keep_alive": None}


def receiver_options(options: ActOptions) -> dict[str, Any]:
    """The DLQ receiver: `handler_options`, and a prefetch of one page less one, so that its link credit is exactly
    one page. A receive of a full page then uses up the credit, the SDK issues new credit only inside the next
    receive, and no transfer arrives while the page's completes are in flight (with more credit, transfers
    arriving under pending completes stalled: prefetch 100 with 100-message receives took 13.9 s instead of
    2.7 s). With prefetch 0 the SDK would start its keep-alive task regardless of `keep_alive`. Messages that
    still arrive on left-over credit (the last, short page; a receive cut to `stop_after`) wait in the SDK's buffer
    for the next receive, or are released when the receiver closes. That close drains the link until two reads of
    `socket_timeout` stay empty: 0.4 s with the SDK's 0.2 s default, 0.04 s with `RECEIVER_SOCKET_TIMEOUT` (a read
    cut by it resumes where it stopped; nothing is lost).
    """
    return {**handler_options(options), "prefetch_count": max(0, options.receive_page - 1),
            "socket_timeout": RECEIVER_SOCKET_TIMEOUT}


class _Senders:
    def __init__(self, client: ServiceBusClient, options: dict[str, Any]) -> None:
        self._client = client
        self._options = options
        self._senders: dict[str, ServiceBusSender] = {}
        self._limits: dict[str, int] = {}

    async def limit(self, queue: str, options: ActOptions) -> int:
        """min(--max-batch-bytes, what the link allows); the link's limit is read once per queue."""
        if queue not in self._limits:
            self._limits[queue] = (await self.get(queue).create_message_batch()).max_size_in_bytes
        link = self._limits[queue]
        return link if options.max_batch_bytes is None else min(options.max_batch_bytes, link)

    def get(self, queue: str) -> ServiceBusSender:
        if queue not in self._senders:
            self._senders[queue] = self._client.get_queue_sender(queue, **self._options)
        return self._senders[queue]

    async def batch(self, queue: str, options: ActOptions) -> ServiceBusMessageBatch:
        return await self.get(queue).create_message_batch(max_size_in_bytes=await self.limit(queue, options))

    async def close(self) -> None:
        results = await asyncio.gather(*(sender.close() for sender in self._senders.values()),
                                       return_exceptions=True)
        for result in results:  # closing after a dropped connection may fail; nothing is held by a sender
            if isinstance(result, BaseException):
                log.debug("sender close failed: %r", result)


class _Settler:
    """Completes the originals whose copies were sent: `submit` queues one, `flush` completes the queue concurrently
    (at most `limit` in flight) and waits for every outcome. Each complete records its own result in the outcome.

    A lane flushes once per page, after all of the page's sends, and issues nothing else on the receiver's
    connection while completes are in flight: with azure-servicebus 7.15 aio, a receive or peek on that connection
    during pending completes stalls on the transport's socket lock (each pending complete polls for its echo holding
    it for up to 0.1 s), measured 5.7x (peek) and 6.5x (receive) slower; a burst of completes alone settles in about
    one round trip. (Senders have connections of their own.)
    """

    def __init__(self, receiver: ServiceBusReceiver, outcome: Outcome, limit: int) -> None:
        self._receiver = receiver
        self._outcome = outcome
        self._limit = limit
        self._queue: list[tuple[ServiceBusReceivedMessage, DlqMessage, list[int]]] = []

    def submit(self, received: ServiceBusReceivedMessage, message: DlqMessage, done: list[int]) -> None:
        self._queue.append((received, message, done))

    async def flush(self) -> None:
        queue, self._queue = self._queue, []
        calls = [functools.partial(self._receiver.complete_message, received) for received, _, _ in queue]
        results = await _bounded(calls, self._limit)
        for (_, message, done), result in zip(queue, results, strict=True):
            if result is None or not isinstance(result, BaseException):
                done.append(message.sequence_number)
            elif isinstance(result, MessageLockLostError):
                # The copy was sent but the original is back in the DLQ: a rerun re-sends it under the same
                # deterministic id, which duplicate detection drops (or, without it, delivers twice: reported).
                self._outcome.failed[message.sequence_number] = LOCK_LOST
            elif isinstance(result, Exception):  # e.g. the connection dropped meanwhile: the rerun finishes it
                self._outcome.failed[message.sequence_number] = f"complete failed after send: {type(result).__name__}"
            else:
                raise result  # cancelled or interrupted


async def _lane(endpoint: Endpoint, client_options: dict[str, Any], queue: str, scan: _Scan) -> Outcome:
    outcome = Outcome()
    held: list[ServiceBusReceivedMessage] = []
    options = scan.options
    try:
        async with aio_client(endpoint, **client_options) as client:
            senders = _Senders(client, handler_options(options))
            receiver = client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                                 **receiver_options(options))
            try:
                # Each handler's open is ~10 SDK polling steps of 50 ms: open the receiver and the expected
                # targets' senders at once.
                await asyncio.gather(receiver.__aenter__(), *(senders.limit(t, options) for t in options.targets))
                settler = _Settler(receiver, outcome, options.settle_concurrency)
                try:
                    await _scan(receiver, senders, scan, outcome, held, settler)
                finally:
                    await settler.flush()  # what was sent before a failure is still completed
                await scan.tally.scanned(functools.partial(_renew_if_due, receiver, held, options))
                await _release(receiver, held, options.settle_concurrency)
            finally:
                # close them at once (each close is a few round trips; a rate-limited scan's also waits for its
                # handlers' keep-alive tasks, which sleep in 1 s steps)
                closed = await asyncio.gather(receiver.close(), senders.close(), return_exceptions=True)
                for result in closed:
                    if isinstance(result, BaseException):
                        log.debug("closing: %r", result)
    except ServiceBusConnectionError as exc:
        outcome.errors.append(f"connection lost: {exc}; rerun to finish (completed originals are not resent)")
    except ServiceBusError as exc:
        outcome.errors.append(f"{type(exc).__name__}: {exc}")
    return outcome


async def _bounded(calls: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run coroutine factories with at most `limit` in flight; exceptions are returned, not raised."""
    slots = asyncio.Semaphore(max(1, limit))

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with slots:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)


async def _release(receiver: ServiceBusReceiver, held: list[ServiceBusReceivedMessage], limit: int) -> None:
    results = await _bounded([functools.partial(receiver.abandon_message, m) for m in held], limit)
    for message, result in zip(held, results, strict=True):
        if isinstance(result, BaseException):
            log.debug("releasing %s: %s", message.sequence_number, result)


async def _scan(receiver: ServiceBusReceiver, senders: _Senders, scan: _Scan, outcome: Outcome,
                held: list[ServiceBusReceivedMessage], settler: _Settler) -> None:
    options = scan.options
    while True:
        remaining = scan.remaining()
        if remaining == 0:
            return
        await _renew_if_due(receiver, held, options)
        want = options.receive_page if remaining is None else max(1, min(options.receive_page, remaining))
        if scan.tally.lanes == 1:
            batch = await receiver.receive_messages(max_message_count=want, max_wait_time=options.max_wait_time)
            if not batch:
                return
        else:
            polled = await _receive_among_lanes(receiver, scan, want)
            if polled is None:
                return
            batch = polled
        todo: list[Item] = []
        cycled = False
        for received in batch:
            message, decision = scan.claim(received)
            if message is None:
                cycled = True
                held.append(received)
            elif decision is None:
                held.append(received)
                outcome.skipped.append(message.sequence_number)
            else:
                todo.append((received, message, decision))
        try:
            await _execute(senders, todo, options, outcome, held, settler)
        finally:
            await settler.flush()
        if options.on_progress is not None:
            options.on_progress(len(batch))
        if cycled:
            return
        if scan.tally.lanes == 1 and not await _unseen_remain(receiver, scan):
            return  # drained: no need to wait max_wait_time for an empty receive


async def _receive_among_lanes(receiver: ServiceBusReceiver, scan: _Scan,
                               want: int) -> list[ServiceBusReceivedMessage] | None:
    """A receive for one of several lanes; None when the scan is over for this lane.

    A lane ends only on an empty receive, never on a peek alone: messages the service already delivered on the
    lane's left-over link credit wait in the SDK's buffer unclaimed, below the sequence numbers its siblings have
    seen (a peek beyond the shared highest one misses them; they would be released at close, unprocessed). An empty
    receive is followed by a peek beyond the highest sequence number any lane has seen: nothing there ends the lane;
    something there (typically a sibling's receive still in flight) is polled for in steps of `LANE_POLL` seconds
    until a sibling claims it or the DLQ has stayed empty for `max_wait_time`.
    """
    wait = scan.options.max_wait_time
    deadline = time.monotonic() + wait
    while True:
        step = max(0.01, min(LANE_POLL, deadline - time.monotonic()))
        batch = await receiver.receive_messages(max_message_count=want, max_wait_time=step)
        if batch:
            return batch
        if time.monotonic() >= deadline or not await _unseen_remain(receiver, scan):
            return None


async def _unseen_remain(receiver: ServiceBusReceiver, scan: _Scan) -> bool:
    """Whether the DLQ holds a message beyond the highest sequence number this scan has seen (one peek)."""
    page = await receiver.peek_messages(max_message_count=1, sequence_number=scan.max_seen + 1)
    return bool(page)


async def _renew_if_due(receiver: ServiceBusReceiver, held: list[ServiceBusReceivedMessage],
                        options: ActOptions) -> None:
    now = datetime.datetime.now(datetime.UTC)
    margin = datetime.timedelta(seconds=LOCK_SAFETY_SECONDS + options.max_wait_time)
    due = [m for m in held if m.locked_until_utc is not None and m.locked_until_utc - now < margin]
    if not due:
        return
    renewals = [functools.partial(receiver.renew_message_lock, m) for m in due]
    results = await _bounded(renewals, options.settle_concurrency)
    lost = {id(m) for m, result in zip(due, results, strict=True) if isinstance(result, BaseException)}
    held[:] = [m for m in held if id(m) not in lost]  # back in the DLQ; a second sighting ends the scan


async def _execute(senders: _Senders, todo: list[Item], options: ActOptions, outcome: Outcome,
                   held: list[ServiceBusReceivedMessage], settler: _Settler) -> None:
    for received, message, decision in todo:
        if decision.kind == "purge":
            settler.submit(received, message, outcome.purged)
    by_target: dict[str, list[Item]] = {}
    for item in todo:
        if item[2].kind != "purge":
            by_target.setdefault(str(item[2].target), []).append(item)
    for target, items in by_target.items():
        def key(item: Item) -> object:
            copy = item[2].copy
            assert copy is not None
            return (copy.properties.get("group_id"), copy.annotations.get("x-opt-partition-key"))

        packing = pack(items, lambda item: item[1].size, await senders.limit(target, options), key)
        for group in packing.batches:
            await _send_group(senders, target, group, options, outcome, held, settler)
        for item in packing.oversize:
            await _oversize(senders, item, options, outcome, held, settler)


async def _send_group(senders: _Senders, target: str, group: list[Item], options: ActOptions, outcome: Outcome,
                      held: list[ServiceBusReceivedMessage], settler: _Settler) -> None:
    """Send `group` as few SDK batches as its real encoded size allows, completing each batch's originals after."""
    pending: list[Item] = []
    batch: ServiceBusMessageBatch | None = None
    for item in group:
        if batch is None:
            batch = await senders.batch(target, options)
        assert item[2].copy is not None
        outgoing = to_amqp(item[2].copy)
        try:
            batch.add_message(outgoing)
        except MessageSizeExceededError:
            if not pending:
                await _oversize(senders, item, options, outcome, held, settler)
                continue
            # our estimate was low: send what fits, retry this one in a fresh batch
            await _flush(senders.get(target), batch, pending, options, outcome, held, settler)
            batch, pending = await senders.batch(target, options), []
            try:
                batch.add_message(outgoing)
            except MessageSizeExceededError:
                await _oversize(senders, item, options, outcome, held, settler)
                continue
        pending.append(item)
    if batch is not None and pending:
        await _flush(senders.get(target), batch, pending, options, outcome, held, settler)


async def _flush(sender: ServiceBusSender, batch: ServiceBusMessageBatch, pending: list[Item], options: ActOptions,
                 outcome: Outcome, held: list[ServiceBusReceivedMessage], settler: _Settler) -> None:
    if options.limiter is not None:
        await asyncio.to_thread(options.limiter.acquire, len(pending))
    try:
        await sender.send_messages(batch)
    except (ServiceBusError, OSError) as exc:  # a dead connection also fails the next receive, ending the run
        for received, message, _ in pending:
            outcome.failed[message.sequence_number] = f"send failed: {type(exc).__name__}"
            held.append(received)
        return
    if options.after_send is not None:
        options.after_send()
    for received, message, decision in pending:
        settler.submit(received, message, outcome.requeued if decision.kind == "requeue" else outcome.parked)


async def _oversize(senders: _Senders, item: Item, options: ActOptions, outcome: Outcome,
                    held: list[ServiceBusReceivedMessage], settler: _Settler) -> None:
    """Too large for one batch: try the fallback (park) as a single send, else leave it in the DLQ."""
    received, message, decision = item
    fallback = decision.fallback
    if fallback is not None and fallback.copy is not None and fallback.target is not None:
        try:
            await senders.get(fallback.target).send_messages(to_amqp(fallback.copy))
        except ServiceBusConnectionError:
            raise
        except (ServiceBusError, ValueError) as exc:
            outcome.left[message.sequence_number] = f"oversize; park failed: {type(exc).__name__}"
            held.append(received)
            return
        settler.submit(received, message, outcome.parked)
        return
    outcome.left[message.sequence_number] = "oversize"
    held.append(received)
