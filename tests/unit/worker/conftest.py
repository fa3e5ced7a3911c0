"""Fixtures of the worker's unit tests: the ledger on both databases (a fresh SQLite file; a fresh database on the
test process's PostgreSQL server, shared with the worker tier)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from digest_worker.config import async_database_url
from digest_worker.db.store import Store
from tests.worker.postgres import PostgresServer, fresh_database, pg_server

__all__ = ["pg_server"]  # the shared server fixture, defined with the server


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The async URL of a new, empty database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with fresh_database(server) as url:
        yield async_database_url(url)


@pytest.fixture
async def store(empty_database: str) -> AsyncIterator[Store]:
    """A migrated ledger."""
    s = Store.open(empty_database)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()
