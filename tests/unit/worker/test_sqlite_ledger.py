"""Group commit of the SQLite ledger: one transaction per batch, committed before any awaiter resumes, one bad
operation fails alone; the compiled statements convert values with the column types like SQLAlchemy does."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from digest_worker.db.sqlite_ledger import SqliteLedger, Statement
from digest_worker.db.store import Store
from digest_worker.db.tables import digest_requests


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.open(f"sqlite+aiosqlite:///{tmp_path}/ledger.db")
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


def _visible(path: Path, request_id: str) -> str | None:
    """The state another connection (another process, after a crash) sees."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT state FROM digest_requests WHERE request_id = ?", (request_id,)).fetchone()
    return row[0] if row else None


async def test_steps_of_one_turn_share_one_transaction(store: Store, tmp_path: Path) -> None:
    ledger = store.ledger
    assert ledger is not None
    await store.begin("warm", None, "c")
    before = ledger.batches
    states = await asyncio.gather(*(store.begin(f"r{i}", f"m{i}", "c") for i in range(16)))
    assert states == ["received"] * 16
    assert ledger.batches == before + 1  # 16 steps, one commit
    claims = await asyncio.gather(*(store.claim(f"r{i}", 30) for i in range(16)))
    assert {c.status for c in claims} == {"claimed"}
    assert ledger.batches == before + 2
    # each awaiter resumed after the commit: another connection sees every row already
    assert {_visible(tmp_path / "ledger.db", f"r{i}") for i in range(16)} == {"sending"}


async def test_same_request_twice_in_one_batch_behaves_as_in_sequence(store: Store) -> None:
    await store.begin("dup", "m", "c")
    first, second = await asyncio.gather(store.claim("dup", 30), store.claim("dup", 30))
    assert (first.status, second.status) == ("claimed", "held")


async def test_a_failing_operation_fails_alone(store: Store, tmp_path: Path) -> None:
    ledger = store.ledger
    assert ledger is not None

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(store.begin("ok1", None, "c"), ledger.run(broken), store.begin("ok2", None, "c"),
                                   return_exceptions=True)
    assert results[0] == "received" and results[2] == "received"
    assert isinstance(results[1], sqlite3.OperationalError)
    assert _visible(tmp_path / "ledger.db", "ok1") == "received"
    assert _visible(tmp_path / "ledger.db", "ok2") == "received"


async def test_statement_converts_values_like_sqlalchemy(tmp_path: Path) -> None:
    """A datetime written through a compiled statement reads back as the same aware datetime via the async engine."""
    s = Store.open(f"sqlite+aiosqlite:///{tmp_path}/types.db")
    await s.upgrade()
    try:
        await s.begin("r", "m", "c")
        row = await s.request_row("r")
        assert row is not None and isinstance(row["created_at"], datetime)
        async with s.engine.connect() as conn:
            via_engine = (await conn.execute(select(digest_requests).where(
                digest_requests.c.request_id == "r"))).mappings().one()
        assert via_engine["created_at"] == row["created_at"]
        statement = Statement(select(digest_requests.c.request_id).where(
            digest_requests.c.created_at <= bindparam("t", type_=digest_requests.c.created_at.type)))
        with sqlite3.connect(tmp_path / "types.db") as conn:
            assert statement.all(conn, {"t": datetime.now(UTC)}) == [{"request_id": "r"}]
    finally:
        await s.close()


async def test_unusable_database_fails_every_caller(tmp_path: Path) -> None:
    ledger = SqliteLedger(str(tmp_path / "missing-dir" / "x.db"))
    try:
        results = await asyncio.gather(ledger.run(lambda c: 1), ledger.run(lambda c: 2), return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    finally:
        await ledger.close()
