"""Turn-taking on one Service Bus receiver link: settlements share it, a receive call or a lock renewal has it alone.

Measured against the emulator with azure-servicebus 7.15 (aio): settlements issued while a `receive_messages` call
is in flight on the same receiver crawl (~120 msg/s, both loops drive the same connection and wait on each other),
while settlements issued concurrently with each other and between receive calls run at thousands per second. Lock
renewals go over the receiver's `$management` link, which fails when several requests race its opening: they have
the link alone too.

Turns are granted in arrival order (phase-fair), so neither side starves the other under load:
- a settlement joins the settlements holding the link if nothing waits, otherwise the group of settlements waiting
  at the end of the queue (one turn for all of them), otherwise it opens a new group at the end;
- a receive call waits for the turns queued before it, then has the link alone; settlements that arrive meanwhile
  go right after it, together;
- a lock renewal (`urgent`) goes to the front of the queue, after the renewals already there: it waits only for
  whoever holds the link now and for those renewals.
Releasing is synchronous, so a cancelled holder can never leave the link taken; a cancelled waiter leaves its turn.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Turn:
    __slots__ = ("exclusive", "granted", "urgent", "waiters")

    def __init__(self, exclusive: bool, urgent: bool = False) -> None:
        self.exclusive = exclusive
        self.urgent = urgent
        self.waiters = 0
        self.granted = asyncio.Event()


class LinkTurns:
    def __init__(self) -> None:
        self._shared = 0  # settlements holding the link
        self._exclusive = False  # a receive call or a renewal holds it
        self._queue: collections.deque[_Turn] = collections.deque()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """A settlement: any number at once, never during an exclusive turn."""
        if not self._exclusive and not self._queue:
            self._shared += 1
        else:
            turn = self._queue[-1] if self._queue and not self._queue[-1].exclusive else None
            if turn is None:
                turn = _Turn(exclusive=False)
                self._queue.append(turn)
            await self._wait(turn)
        try:
            yield
        finally:
            self._shared -= 1
            self._advance()

    @asynccontextmanager
    async def exclusive(self, urgent: bool = False) -> AsyncIterator[None]:
        """Alone on the link: a receive call after the turns queued before it; an `urgent` turn (a lock renewal)
        before every queued turn."""
        if not self._exclusive and not self._shared and not self._queue:
            self._exclusive = True
        else:
            turn = _Turn(exclusive=True, urgent=urgent)
            if urgent:  # after the renewals already at the front, before everything else
                self._queue.insert(sum(1 for t in self._queue if t.urgent), turn)
            else:
                self._queue.append(turn)
            await self._wait(turn)
        try:
            yield
        finally:
            self._exclusive = False
            self._advance()

    async def _wait(self, turn: _Turn) -> None:
        """Wait for `turn`; once granted, the caller holds the link (counted by `_advance`)."""
        turn.waiters += 1
        try:
            await turn.granted.wait()
        except asyncio.CancelledError:
            if turn.granted.is_set():  # granted in the meantime: give it back
                if turn.exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
            else:
                turn.waiters -= 1
                if turn.waiters == 0:
                    self._queue.remove(turn)
            self._advance()
            raise

    def _advance(self) -> None:
        """Grant the next queued turn once nobody holds the link."""
        if self._exclusive or self._shared or not self._queue:
            return
        turn = self._queue.popleft()
        if turn.exclusive:
            self._exclusive = True
        else:
            self._shared += turn.waiters
        turn.granted.set()

    @property
    def busy(self) -> bool:
        return self._exclusive or self._shared > 0
