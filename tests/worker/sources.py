"""Digest sources plugged in by import path (`DIGEST_SOURCE=tests.worker.sources:slow`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import datetime

from digest_worker.card import DigestItem
from digest_worker.db.store import Store
from digest_worker.request import DigestRequest
from digest_worker.source import TableSource


class SlowSource(TableSource):
    """The table source after a delay (DIGEST_TEST_SOURCE_DELAY seconds): a digest that takes long to build."""

    async def fetch(self, request: DigestRequest, now: datetime) -> Sequence[DigestItem]:
        await asyncio.sleep(float(os.environ.get("DIGEST_TEST_SOURCE_DELAY", "3")))
        return await super().fetch(request, now)


class NoopSource:
    """No content at all (benchmarks)."""

    async def fetch(self, request: DigestRequest, now: datetime) -> Sequence[DigestItem]:
        return []


def slow(store: Store) -> SlowSource:
    return SlowSource(store)


def noop(store: Store) -> NoopSource:
    return NoopSource()
