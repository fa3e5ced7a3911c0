"""Fixtures of the worker's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from digest_worker.db.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated ledger in a fresh SQLite file."""
    s = Store.open(f"sqlite+aiosqlite:///{tmp_path}/ledger.db")
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()
