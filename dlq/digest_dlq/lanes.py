"""What the lanes of one lock-scan share, in one process or across forked processes (`--parallel N`).

A lane is one receiver on its own connection competing for the same dead-letter queue. The client is CPU-bound (the
SDK's AMQP stack is pure Python): lanes on one event loop only overlap round trips, lanes in processes also use
more cores. Forked lanes share the highest sequence number seen (a lane ends when a peek finds nothing beyond it),
the acted count (`stop_after`), the progress count, and a barrier: no lane releases the messages it holds before
every lane has finished scanning, or a sibling could receive them again and act twice on one message in its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from digest_dlq.report import Outcome

log = logging.getLogger("digest.dlq")

_MAX_SEEN, _ACTED, _PROGRESS = range(3)
BARRIER_POLL = 0.02
"""Seconds between checks of the scan barrier (a lane renews the locks it holds while it waits)."""


class Tally:
    """Lanes on one event loop: plain counters (a lane's claim never awaits, so no lock is needed)."""

    def __init__(self, lanes: int = 1) -> None:
        self.lanes = lanes
        self._counts: Any = [0, 0, 0]  # max seen, acted, progress (shared memory in `SharedTally`)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        yield self._counts

    @property
    def max_seen(self) -> int:
        return int(self._counts[_MAX_SEEN])

    @property
    def acted(self) -> int:
        return int(self._counts[_ACTED])

    def see(self, sequence_number: int) -> None:
        with self._locked() as counts:
            counts[_MAX_SEEN] = max(counts[_MAX_SEEN], sequence_number)

    def act(self, stop_after: int | None) -> bool:
        """Count one acted message unless `stop_after` were exceeded."""
        with self._locked() as counts:
            if stop_after is not None and counts[_ACTED] >= stop_after:
                return False
            counts[_ACTED] += 1
            return True

    def progress(self, count: int) -> None:
        with self._locked() as counts:
            counts[_PROGRESS] += count

    @property
    def progressed(self) -> int:
        return int(self._counts[_PROGRESS])

    async def scanned(self, while_waiting: Callable[[], Any]) -> None:
        """This lane has finished scanning; returns once every lane has (at once for lanes on one loop: they share
        the set of sequence numbers seen, so none acts on a message another released)."""


class SharedTally(Tally):
    """Lanes in forked processes: the counters in shared memory, and the scan barrier."""

    def __init__(self, context: BaseContext, lanes: int) -> None:
        super().__init__(lanes)
        self._counts = context.Array("q", 3)
        self._scanning = context.Value("i", lanes)
        self._all_scanned = context.Event()
        self._done = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        with self._counts.get_lock():
            yield self._counts

    def finish(self) -> None:
        """This lane scans no more (idempotent); the last one opens the barrier."""
        if self._done:
            return
        self._done = True
        with self._scanning.get_lock():
            self._scanning.value -= 1
            if self._scanning.value <= 0:
                self._all_scanned.set()

    def open_barrier(self) -> None:
        """A lane died without finishing: nobody waits for it."""
        self._all_scanned.set()

    async def scanned(self, while_waiting: Callable[[], Any]) -> None:
        self.finish()
        while not self._all_scanned.is_set():
            await while_waiting()
            await asyncio.sleep(BARRIER_POLL)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def auto_count() -> int:
    """The CLI's default lane count: 2 where the process may use two CPUs and can fork, else 1. One lane is bound
    by one CPU (5,000 messages of 200 B-50 KB: ~2 s of client CPU); more lanes than CPUs only add tails."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 and can_fork() else 1


LaneBody = Callable[[SharedTally], Outcome]


def run_forked(lanes: int, body: LaneBody, on_progress: Callable[[int], None] | None) -> list[Outcome]:
    """Run `body` in `lanes` forked processes (they inherit the loaded modules and the caller's closures: nothing is
    pickled on the way in; each lane's `Outcome` is pickled back). A lane that dies reports it as an error; what it
    held returns to the dead-letter queue when its locks expire (it completed only what it had sent)."""
    context = multiprocessing.get_context("fork")
    tally = SharedTally(context, lanes)
    pending: dict[Connection, BaseProcess] = {}
    for number in range(lanes):
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(writer, body, tally), name=f"dlq-lane-{number}", daemon=True)
        child.start()
        writer.close()
        pending[reader] = child
    outcomes: list[Outcome] = []
    reported = 0
    try:
        while pending:
            for ready in multiprocessing.connection.wait(list(pending), timeout=0.1):
                assert isinstance(ready, Connection)
                process = pending.pop(ready)
                try:
                    outcomes.append(ready.recv())
                except EOFError:
                    process.join()
                    tally.open_barrier()
                    outcomes.append(Outcome(errors=[f"lane process {process.name} exited with code "
                                                    f"{process.exitcode}; rerun to finish"]))
                ready.close()
                process.join()
            if on_progress is not None and tally.progressed > reported:
                on_progress(tally.progressed - reported)
                reported = tally.progressed
    finally:
        for left in pending.values():  # interrupted: the lanes go with the caller
            left.terminate()
    return outcomes


def _child(writer: Connection, body: LaneBody, tally: SharedTally) -> None:
    try:
        outcome = body(tally)
    except BaseException as exc:  # report, never hang the parent
        outcome = Outcome(errors=[f"lane failed: {type(exc).__name__}: {exc}"])
    finally:
        tally.finish()
    writer.send(outcome)
    writer.close()
