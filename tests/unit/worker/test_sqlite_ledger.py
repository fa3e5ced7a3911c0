"""Group commit of the SQLite ledger: one transaction per batch, committed before any awaiter resumes, one bad
operation fails alone; the compiled statements convert values with the column types like SQLAlchemy does."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Boolean, DateTime, Float, Integer, bindparam, make_url, select

from digest_worker import failures
from digest_worker.db.sqlite_ledger import CONVERSIONS, SqliteLedger, Statement
from digest_worker.db.statements import GENERATED, SQLITE, compile_sqlite, generated_source
from digest_worker.db.store import Store, sqlite_file
from digest_worker.db.tables import digest_requests


@pytest.fixture
def empty_database(tmp_path: Path) -> str:
    """This module is about the SQLite ledger: `store` is on a SQLite file only."""
    return f"sqlite+aiosqlite:///{tmp_path}/ledger.db"


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


async def test_batches_run_in_the_loop_while_the_database_is_free(store: Store) -> None:
    ledger = store.ledger
    assert ledger is not None
    await store.begin("warm", None, "c")
    before = (ledger.batches, ledger.threaded_batches)
    for i in range(5):
        await store.begin(f"i{i}", None, "c")
    assert (ledger.batches, ledger.threaded_batches) == (before[0] + 5, before[1])


async def test_a_taken_write_lock_is_waited_out_in_the_thread_not_in_the_loop(store: Store, tmp_path: Path) -> None:
    """Another process holding the write lock (an import, a migration): the batch waits in the ledger's thread while
    the event loop keeps running, and commits once the lock is released."""
    ledger = store.ledger
    assert ledger is not None
    await store.begin("warm", None, "c")
    threaded = ledger.threaded_batches
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        step = asyncio.create_task(store.begin("locked", "m", "c"))
        ticks = 0
        for _ in range(10):  # the loop is not blocked while the step waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not step.done()
        blocker.execute("COMMIT")
        assert await asyncio.wait_for(step, 10) == "received"
    finally:
        blocker.close()
    assert ledger.threaded_batches == threaded + 1
    assert _visible(tmp_path / "ledger.db", "locked") == "received"
    await store.begin("after", None, "c")  # and the next batch is back in the loop
    assert ledger.threaded_batches == threaded + 1


async def test_checkpoints_run_in_the_thread(store: Store, tmp_path: Path) -> None:
    ledger = store.ledger
    assert ledger is not None
    ledger.CHECKPOINT_EVERY = 3
    for i in range(7):
        await store.begin(f"k{i}", None, "c")
        await ledger.run_alone(lambda conn: None)  # the thread has run what was queued before
    assert ledger.checkpoints == 2  # after batches 3 and 6
    # the loop's connection never checkpoints by itself (a checkpoint writes the database file and fsyncs)
    assert await ledger.run(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0


async def test_digest_item_reads_scan_in_the_thread_not_in_the_loop(store: Store) -> None:
    from digest_worker.card import DigestItem

    ledger = store.ledger
    assert ledger is not None
    now = datetime.now(UTC)
    await store.put_items([(DigestItem("o", f"t{i}", "", None, float(i), now), None) for i in range(30)])
    batches = ledger.batches
    assert [i.title for i in await store.items(datetime(2000, 1, 1, tzinfo=UTC), 3)] == ["t29", "t28", "t27"]
    assert ledger.batches == batches  # no write transaction, nothing run on the event loop's connection


async def test_same_request_twice_in_one_batch_behaves_as_in_sequence(store: Store) -> None:
    await store.begin("dup", "m", "c")
    first, second = await asyncio.gather(store.claim("dup", 30), store.claim("dup", 30))
    assert (first.status, second.status) == ("claimed", "held")


async def test_a_failing_operation_fails_alone(store: Store, tmp_path: Path) -> None:
    ledger = store.ledger
    assert ledger is not None

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    threaded = ledger.threaded_batches
    results = await asyncio.gather(store.begin("ok1", None, "c"), ledger.run(broken), store.begin("ok2", None, "c"),
                                   return_exceptions=True)
    # one by one in the thread, where each waits out a write lock another writer may take between the tries
    assert ledger.threaded_batches == threaded + 1
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
        statement = Statement(*compile_sqlite(select(digest_requests.c.request_id).where(
            digest_requests.c.created_at <= bindparam("t", type_=digest_requests.c.created_at.type))))
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


async def test_a_file_that_is_not_a_database_fails_every_caller(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database " * 512)
    ledger = SqliteLedger(str(path))
    try:
        results = await asyncio.wait_for(asyncio.gather(ledger.run(lambda c: 1), ledger.run(lambda c: 2),
                                                        return_exceptions=True), 30)
        assert all(isinstance(r, sqlite3.DatabaseError) for r in results), results
    finally:
        await ledger.close()


async def test_a_broken_loop_connection_is_replaced(store: Store) -> None:
    """An operation that leaves the loop's connection unusable (here: closed mid-transaction, so not even ROLLBACK
    runs) fails its batch; the next batch opens a fresh connection and runs in the loop again."""
    ledger = store.ledger
    assert ledger is not None
    await store.begin("warm", None, "c")
    with pytest.raises(sqlite3.ProgrammingError):
        await ledger.run(lambda conn: conn.close())
    threaded = ledger.threaded_batches
    assert await store.begin("after", None, "c") == "received"
    assert ledger.threaded_batches == threaded  # not stuck behind a connection still inside a transaction


async def test_close_fails_what_is_queued_and_refuses_the_rest(tmp_path: Path) -> None:
    s = Store.open(f"sqlite+aiosqlite:///{tmp_path}/closing.db")
    await s.upgrade()
    ledger = s.ledger
    assert ledger is not None
    await s.begin("warm", None, "c")
    blocker = sqlite3.connect(tmp_path / "closing.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first = asyncio.ensure_future(s.begin("in-thread", None, "c"))  # goes to the thread, waits for the lock
    for _ in range(5):
        await asyncio.sleep(0.01)
    second = asyncio.ensure_future(s.begin("queued", None, "c"))  # queued behind the batch in the thread
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(s.close())
    await asyncio.sleep(0.05)
    blocker.execute("COMMIT")
    blocker.close()
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
    await asyncio.wait_for(closing, 10)
    assert results[0] == "received"  # the batch under way finishes
    assert isinstance(results[1], failures.FailureError) and "closed" in str(results[1])  # never left waiting
    with pytest.raises(failures.FailureError, match="closed"):
        await s.begin("late", None, "c")
    assert _visible(tmp_path / "closing.db", "queued") is None


def test_compiled_statements_are_fresh() -> None:
    assert GENERATED.read_text() == generated_source(), "run python -m digest_worker.db.statements --write"


@pytest.mark.parametrize(("kind", "type_", "values"), [
    ("datetime", DateTime(timezone=True), [None, datetime(2026, 11, 28, 17, 5, 9, 120, tzinfo=UTC),
                                           datetime(2026, 1, 2, 3, 4, 5)]),
    ("boolean", Boolean(), [None, True, False]),
    ("float", Float(), [None, 1.5, 3]),
    ("integer", Integer(), [None, 7]),
])
def test_stdlib_conversions_match_sqlalchemy(kind: str, type_: object, values: list[object]) -> None:
    impl = type_.dialect_impl(SQLITE)  # type: ignore[attr-defined]
    to_sql, from_sql = CONVERSIONS[kind]
    bind = impl.bind_processor(SQLITE) or (lambda v: v)
    result = impl.result_processor(SQLITE, None) or (lambda v: v)
    for value in values:
        assert to_sql(value) == bind(value)
        assert from_sql(bind(value)) == result(bind(value))


@pytest.mark.parametrize("url", ["sqlite:///rel.db", "sqlite+aiosqlite:////tmp/x.db", "sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:x?mode=ro&uri=true", "sqlite:////tmp/x.db?timeout=5",
                                 "postgresql+asyncpg://u@h/db"])
def test_sqlite_file_parses_like_sqlalchemy(url: str) -> None:
    parsed = make_url(url)
    plain = parsed.get_backend_name() == "sqlite" and not parsed.query and parsed.database not in (None, "", ":memory:")
    assert sqlite_file(url) == (parsed.database if plain and not str(parsed.database).startswith("file:") else None)


def test_sqlite_ledger_runs_without_importing_sqlalchemy(tmp_path: Path) -> None:
    """The cold-start path: a SQLite worker with a current schema never imports SQLAlchemy."""
    url = f"sqlite+aiosqlite:///{tmp_path}/cold.db"

    async def prepare() -> None:
        s = Store.open(url)
        await s.upgrade()
        await s.close()

    asyncio.run(prepare())
    code = f"""
import asyncio, sys
from digest_worker.db.store import Store, warm_up
async def main():
    warm_up()
    s = Store.open({url!r})
    await s.check_schema()
    assert await s.begin_with_reference("r", "m", "c") == ("received", None)
    assert (await s.claim("r", 30)).status == "claimed"
    await s.finish("r", "sent", activity_id="a")
    assert (await s.request_row("r"))["state"] == "sent"
    assert list(await s.items(__import__("datetime").datetime(2000, 1, 1), 5)) == []
    await s.close()
asyncio.run(main())
assert "sqlalchemy" not in sys.modules, sorted(m for m in sys.modules if m.startswith("sqlalchemy"))[:5]
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
