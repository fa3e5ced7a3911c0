"""Turn-taking on one Service Bus receiver link: settlements share it, a receive call or a lock renewal has it alone.

Measured against the emulator with azure-servicebus 7.15 (aio): settlements issued while a `receive_messages` call
is in flight on the same receiver crawl (~120 msg/s, both loops drive the same connection and wait on each other),
while settlements issued concurrently with each other and between receive calls run at thousands per second. Lock
renewals go over the receiver's `$management` link, which fails when several requests race its opening: they have
the link alone too.

Lock renewals go first, then settlements: a receive call waits until no renewal or settlement runs or waits
(they need receive calls to have anything to renew or settle, so receiving cannot starve), a settlement waits only
while a receive call or renewal runs, a renewal only while anything else runs.
Releasing is synchronous, so a cancelled holder can never leave the link taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class LinkTurns:
    def __init__(self) -> None:
        self._shared = 0
        self._shared_waiting = 0
        self._urgent_waiting = 0
        self._exclusive = False
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """A settlement: any number at once, never during an exclusive turn."""
        self._shared_waiting += 1
        try:
            await self._until(lambda: not self._exclusive)
        finally:
            self._shared_waiting -= 1
            self._notify()
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._notify()

    @asynccontextmanager
    async def exclusive(self, urgent: bool = False) -> AsyncIterator[None]:
        """Alone on the link: a receive call after every renewal and settlement that waits; an `urgent` turn (a lock
        renewal) as soon as the link is free."""
        if urgent:
            self._urgent_waiting += 1
            try:
                await self._until(lambda: not self._exclusive and not self._shared)
            finally:
                self._urgent_waiting -= 1
                self._notify()
        else:
            await self._until(lambda: not self._exclusive and not self._shared and not self._shared_waiting
                              and not self._urgent_waiting)
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._notify()

    @property
    def busy(self) -> bool:
        return self._exclusive or self._shared > 0
