"""The operator-wide work queue: resync timers, wake-ups, retries, one worker per pipeline at a time, the gate."""

from __future__ import annotations

import asyncio
import collections
import logging

import pytest

from digest_operator.workqueue import Item, Schedule, WorkQueue

A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


def taken(schedule: Schedule) -> list[Item]:
    items = []
    while (item := schedule.take()) is not None:
        items.append(item)
    return items


def test_a_pipeline_is_resynced_one_interval_after_it_was_seen_and_every_interval_after() -> None:
    schedule = Schedule(interval=10)
    schedule.track("u-a", A, now=100)
    assert schedule.pop_due(109.9) == 110
    assert taken(schedule) == []
    assert schedule.pop_due(110) == 120
    assert taken(schedule) == [Item("u-a", A, resync=True)]
    schedule.done("u-a")
    schedule.track("u-a", A, now=115)  # seen again (a watch event, Kopf's relist): the timer stays
    assert schedule.pop_due(119) == 120
    assert taken(schedule) == []
    schedule.pop_due(120)
    assert taken(schedule) == [Item("u-a", A, resync=True)]


def test_a_wake_up_is_a_reconcile_now_and_outranks_a_resync() -> None:
    schedule = Schedule(interval=10)
    schedule.track("u-a", A, now=0)
    schedule.track("u-b", B, now=0)
    assert schedule.wake(B)
    assert not schedule.wake(C)  # not tracked: nothing to do
    assert taken(schedule) == [Item("u-b", B, resync=False)]
    schedule.done("u-b")
    assert schedule.wake(A)
    schedule.pop_due(10)  # A's resync is due too: still one reconcile, not a mere resync
    assert taken(schedule) == [Item("u-a", A, resync=False), Item("u-b", B, resync=True)]


def test_a_running_pipeline_is_not_handed_out_again_until_done_and_then_runs_again() -> None:
    schedule = Schedule(interval=10)
    schedule.track("u-a", A, now=0)
    schedule.track("u-b", B, now=0)
    schedule.wake(A)
    assert taken(schedule) == [Item("u-a", A, resync=False)]
    schedule.wake(A)  # a child changed while it ran
    schedule.wake(B)
    assert taken(schedule) == [Item("u-b", B, resync=False)]
    schedule.done("u-a")
    assert taken(schedule) == [Item("u-a", A, resync=False)]


def test_ready_pipelines_are_taken_in_the_order_they_became_ready() -> None:
    schedule = Schedule(interval=10)
    for uid, key in (("u-a", A), ("u-b", B), ("u-c", C)):
        schedule.track(uid, key, now=0)
    for key in (C, A, B):
        schedule.wake(key)
    assert [item.key for item in taken(schedule)] == [C, A, B]


def test_a_retry_runs_at_its_time_whether_or_not_a_resync_is_due() -> None:
    schedule = Schedule(interval=10)
    schedule.track("u-a", A, now=0)
    schedule.retry("u-a", at=3)
    assert schedule.pop_due(2.9) == 3
    assert taken(schedule) == []
    assert schedule.pop_due(3) == 10
    assert taken(schedule) == [Item("u-a", A, resync=False)]
    schedule.retry("u-z", at=4)  # not tracked: ignored
    schedule.done("u-a")
    assert schedule.pop_due(4) == 10
    assert taken(schedule) == []


def test_an_untracked_pipeline_is_neither_resynced_nor_woken_nor_retried() -> None:
    schedule = Schedule(interval=10)
    schedule.track("u-a", A, now=0)
    schedule.track("u-b", B, now=0)
    schedule.wake(A)
    schedule.retry("u-a", at=1)
    schedule.untrack("u-a")
    assert not schedule.tracked("u-a") and len(schedule) == 1
    assert not schedule.wake(A)
    assert schedule.pop_due(10) == 20
    assert taken(schedule) == [Item("u-b", B, resync=True)]
    schedule.clear()
    assert len(schedule) == 0 and schedule.pop_due(100) is None and taken(schedule) == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: collections.abc.Callable[[], bool], within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_workers_run_each_pipeline_alone_and_different_pipelines_together() -> None:
    running: collections.Counter[str] = collections.Counter()
    most: collections.Counter[str] = collections.Counter()
    runs: list[str] = []
    release = asyncio.Event()

    async def work(item: Item) -> float | None:
        running[item.uid] += 1
        most[item.uid] = max(most[item.uid], running[item.uid])
        await release.wait()
        running[item.uid] -= 1
        runs.append(item.uid)
        return None

    queue = WorkQueue(3600, work, workers=4)
    queue.start()
    try:
        queue.track("u-a", A)
        queue.track("u-b", B)
        for _ in range(3):  # asked for three times before it runs: one reconcile
            queue.wake(A)
        queue.wake(B)
        await until(lambda: running["u-a"] == 1 and running["u-b"] == 1)  # both at once
        for _ in range(3):  # asked for again while it runs: one more, after this one
            queue.wake(A)
        await asyncio.sleep(0.05)
        release.set()
        await until(lambda: runs.count("u-a") == 2 and runs.count("u-b") == 1)  # A again, once, after its first run
        await asyncio.sleep(0.05)
        assert runs.count("u-a") == 2 and most["u-a"] == 1
    finally:
        await queue.close()


async def test_a_failed_reconcile_is_retried_after_its_delay_and_an_error_does_not_stop_the_queue(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Item] = []

    async def work(item: Item) -> float | None:
        calls.append(item)
        if len(calls) == 1:
            return 0.05  # a temporary error: try again in 50 ms
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return None

    queue = WorkQueue(3600, work, workers=2)
    queue.start()
    try:
        queue.track("u-a", A)
        queue.wake(A)
        await until(lambda: len(calls) == 2)
        assert calls[1] == Item("u-a", A, resync=False)
        with caplog.at_level(logging.ERROR):
            await until(lambda: "reconcile of ns/a failed" in caplog.text)
        queue.wake(A)  # the queue still works
        await until(lambda: len(calls) == 3)
    finally:
        await queue.close()


async def test_resyncs_follow_the_clock() -> None:
    clock = Clock()
    calls: list[Item] = []

    async def work(item: Item) -> float | None:
        calls.append(item)
        return None

    queue = WorkQueue(10, work, workers=1, clock=clock)
    queue.start()
    try:
        queue.track("u-a", A)
        await asyncio.sleep(0.05)
        assert calls == []
        clock.now = 10
        queue.gate_changed()  # the test's clock moved: let the worker look again
        await until(lambda: calls == [Item("u-a", A, resync=True)])
    finally:
        await queue.close()


async def test_nothing_runs_while_the_gate_is_closed_and_a_paused_replica_forgets_its_pipelines() -> None:
    is_open = False
    calls: list[Item] = []

    async def work(item: Item) -> float | None:
        calls.append(item)
        return None

    queue = WorkQueue(3600, work, workers=2, gate=lambda: is_open)
    queue.start()
    try:
        queue.track("u-a", A)
        queue.wake(A)
        await asyncio.sleep(0.1)
        assert calls == []  # held while closed
        is_open = True
        queue.gate_changed()
        await until(lambda: calls == [Item("u-a", A, resync=False)])
        is_open = False
        queue.gate_changed()
        await until(lambda: len(queue.schedule) == 0)  # paused: Kopf lists them again on resuming
        assert not queue.wake(A)
        is_open = True
        queue.track("u-a", A)
        queue.wake(A)
        await until(lambda: len(calls) == 2)
    finally:
        await queue.close()


class Survived(BaseException):
    """Ends a worker that survived its cancellation (raised by its gate), so that a failing test fails, not hangs."""


async def test_the_queue_stops_even_while_it_is_being_woken_all_the_time() -> None:
    """A worker must not survive its cancellation (Python 3.11's asyncio.wait_for can swallow one that arrives as
    the awaited event is set): the operator could not stop."""
    kill = asyncio.Event()

    def gate() -> bool:
        if kill.is_set():
            raise Survived
        return True

    async def work(item: Item) -> float | None:
        return None

    async def nudge(queue: WorkQueue, stop: asyncio.Event) -> None:
        while not stop.is_set():
            queue.gate_changed()
            await asyncio.sleep(0)

    for _ in range(30):
        queue = WorkQueue(3600, work, workers=8, gate=gate)
        queue.track("u-a", A)  # a resync pending: the workers wait with a timeout
        queue.start()
        stop = asyncio.Event()
        nudger = asyncio.create_task(nudge(queue, stop))
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(queue.close())
        try:
            done, _ = await asyncio.wait([closing], timeout=2)  # not cancelling: a gather waits for its survivors
            if not done:
                kill.set()
                await closing
                pytest.fail("a worker survived its cancellation")
        finally:
            stop.set()
            await nudger
