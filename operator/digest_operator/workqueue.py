"""One operator-wide work queue for the reconciles Kopf does not start: resyncs, wake-ups and their retries.

controller-runtime's shape instead of a Kopf timer and daemon per pipeline (each of which made Kopf keep that
pipeline's whole body in memory, 48 KB of Python objects, and two tasks): the queue remembers each pipeline by
uid and (namespace, name) only, a few workers take what is due, and a pipeline is never handed to two workers at
once; asked for again while it runs, it runs again after. `Schedule` is the pure core (time is passed in);
`WorkQueue` runs it with asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from digest_operator.cache import PipelineKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """A reconcile to run: the pipeline, and whether it is only a resync (skipped if the pipeline was reconciled
    meanwhile)."""

    uid: str
    key: PipelineKey
    resync: bool


@dataclass
class Schedule:
    """Which pipelines are tracked, when each one's next resync is due, and which are ready to run."""

    interval: float
    _keys: dict[str, PipelineKey] = field(default_factory=dict)
    _uids: dict[PipelineKey, str] = field(default_factory=dict)
    _resync_at: dict[str, float] = field(default_factory=dict)
    _timers: list[tuple[float, str, bool]] = field(default_factory=list)
    """(when, uid, resync) in time order; stale entries (untracked, or a resync moved) are dropped when popped."""
    _ready: dict[str, bool] = field(default_factory=dict)
    """uid → resync only; in the order they became ready."""
    _running: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._keys)

    def tracked(self, uid: str) -> bool:
        return uid in self._keys

    def track(self, uid: str, key: PipelineKey, now: float) -> None:
        """A pipeline seen: its first resync is one interval from now (a pipeline seen again keeps its timer)."""
        if uid in self._keys:
            return  # a uid keeps its namespace and name
        self._keys[uid] = key
        self._uids[key] = uid
        self._resync_at[uid] = now + self.interval
        heapq.heappush(self._timers, (now + self.interval, uid, True))

    def untrack(self, uid: str) -> None:
        """A pipeline gone (or being deleted): no more resyncs, wake-ups or retries of it."""
        key = self._keys.pop(uid, None)
        if key is not None and self._uids.get(key) == uid:
            del self._uids[key]
        self._resync_at.pop(uid, None)
        self._ready.pop(uid, None)

    def clear(self) -> None:
        """Forget every pipeline (this replica was paused: it learns them again from Kopf's list on resuming)."""
        for uid in list(self._keys):
            self.untrack(uid)
        self._timers.clear()

    def wake(self, key: PipelineKey) -> bool:
        """Reconcile the pipeline (namespace, name) as soon as possible; False if it is not tracked."""
        uid = self._uids.get(key)
        if uid is None:
            return False
        self._ready[uid] = False
        return True

    def retry(self, uid: str, at: float) -> None:
        """Reconcile the pipeline again at `at` (a failed reconcile), whether or not a resync is due."""
        if uid in self._keys:
            heapq.heappush(self._timers, (at, uid, False))

    def pop_due(self, now: float) -> float | None:
        """Make ready what is due at `now`; the time of the next timer (None: none left)."""
        while self._timers and self._timers[0][0] <= now:
            when, uid, resync = heapq.heappop(self._timers)
            if uid not in self._keys:
                continue
            if resync:
                if self._resync_at.get(uid) != when:
                    continue  # superseded
                following = now + self.interval
                self._resync_at[uid] = following
                heapq.heappush(self._timers, (following, uid, True))
            self._ready[uid] = self._ready.get(uid, True) and resync
        while self._timers and self._timers[0][1] not in self._keys:
            heapq.heappop(self._timers)  # keep the next time meaningful
        return self._timers[0][0] if self._timers else None

    def take(self) -> Item | None:
        """The first ready pipeline that is not running; it is running until `done`."""
        for uid, resync in self._ready.items():
            if uid not in self._running:
                del self._ready[uid]
                self._running.add(uid)
                return Item(uid, self._keys[uid], resync)
        return None

    def done(self, uid: str) -> None:
        self._running.discard(uid)


Gate = Callable[[], bool]
"""Whether this replica may act now (Kopf peering); re-asked at least every `GATE_RECHECK` seconds."""

GATE_RECHECK = 1.0


class WorkQueue:
    """`Schedule` run by `workers` tasks that call `work(item)`; `work` returns the delay of a retry (None: none)."""

    def __init__(self, interval: float, work: Callable[[Item], Awaitable[float | None]], *, workers: int,
                 gate: Gate = lambda: True, clock: Callable[[], float] = time.monotonic) -> None:
        self.schedule = Schedule(interval)
        self._work, self._workers, self._gate, self._clock = work, workers, gate, clock
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._open = False

    def start(self) -> None:
        """Start the workers, in the current context (Kopf's Events and object loggers need its context)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name=f"work queue {n}") for n in range(self._workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def track(self, uid: str, key: PipelineKey) -> None:
        self.schedule.track(uid, key, self._clock())
        self._changed.set()

    def untrack(self, uid: str) -> None:
        self.schedule.untrack(uid)

    def wake(self, key: PipelineKey) -> bool:
        woken = self.schedule.wake(key)
        if woken:
            self._changed.set()
        return woken

    def gate_changed(self) -> None:
        """The gate's answer may have changed (a peering object event)."""
        self._changed.set()

    def _is_open(self) -> bool:
        is_open = self._gate()
        if self._open and not is_open:
            logger.info("paused: %d pipelines forgotten until Kopf lists them again", len(self.schedule))
            self.schedule.clear()
        self._open = is_open
        return is_open

    async def _next(self) -> Item:
        while True:
            self._changed.clear()
            following = self.schedule.pop_due(self._clock())
            if self._is_open():
                item = self.schedule.take()
                if item is not None:
                    return item
                wait = math.inf if following is None else max(0.0, following - self._clock())
            else:
                wait = GATE_RECHECK
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives as the
            # event is set, and a worker that survives its cancellation keeps the operator from stopping
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(wait) else wait):
                    await self._changed.wait()

    async def _run(self) -> None:
        while True:
            item = await self._next()
            try:
                delay = await self._work(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the queue: the next resync tries again
                logger.exception("reconcile of %s/%s failed", *item.key)
                delay = None
            finally:
                self.schedule.done(item.uid)
            if delay is not None:
                self.schedule.retry(item.uid, self._clock() + delay)
            self._changed.set()  # it may have been asked for again while it ran; a retry is a new timer
