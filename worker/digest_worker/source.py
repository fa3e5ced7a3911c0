"""Where digest content comes from: the `DigestSource` protocol, the built-in table source, plug-ins by import path."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from digest_worker.card import DigestItem
from digest_worker.db.store import Store
from digest_worker.request import DigestRequest


@runtime_checkable
class DigestSource(Protocol):
    """Returns the items of one digest, best first, at most `request.max_items`.

    Raise `digest_worker.failures.FailureError` for classified failures; any other exception counts as transient.
    """

    async def fetch(self, request: DigestRequest, now: datetime) -> Sequence[DigestItem]: ...


class TableSource:
    """The built-in source: the `digest_items` table, for the request's date range, top `max_items` by score."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def fetch(self, request: DigestRequest, now: datetime) -> Sequence[DigestItem]:
        since = now - timedelta(days=request.date_range_days)
        return await self.store.items(since, request.max_items, owner=request.owner, audience=request.audience)


def load_source(path: str, store: Store) -> DigestSource:
    """`package.module:factory`; the factory is called with the store and returns a `DigestSource`."""
    module_name, _, attr = path.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    source = factory(store)
    if not isinstance(source, DigestSource):
        raise TypeError(f"{path} did not return a DigestSource (an object with async fetch(request, now))")
    return source
