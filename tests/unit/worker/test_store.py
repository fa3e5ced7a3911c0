"""The ledger's state machine and the migrations, on both databases (a SQLite file and a real PostgreSQL server),
and how database errors are classified."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from digest_worker.card import DigestItem
from digest_worker.config import async_database_url
from digest_worker.db import migrate
from digest_worker.db.store import Store, StoredReference, classify
from digest_worker.failures import Category, FailureError
from digest_worker.imports import ImportError_, parse_items, parse_references
from tests.support.kubeconfig import free_port
from tests.worker.postgres import PostgresServer, database_name, fresh_database


def test_head_constant_matches_alembic() -> None:
    assert migrate.head_revision() == migrate.HEAD


async def test_migrations_upgrade_and_check(empty_database: str) -> None:
    s = Store.open(empty_database)
    try:
        with pytest.raises(FailureError) as info:
            await s.check_schema()
        assert (info.value.failure.category, info.value.failure.kind) == (Category.SYSTEMIC, "DatabaseSchemaMissing")
        assert await migrate.current_revision(s.engine) is None
        await s.upgrade()
        await s.upgrade()  # idempotent
        assert await migrate.current_revision(s.engine) == migrate.HEAD
        await s.check_schema()
        async with s.engine.begin() as conn:
            await conn.execute(text("DROP TABLE digest_requests"))
        with pytest.raises(FailureError) as info:
            await s.check_schema()
        assert info.value.failure.kind == "DatabaseSchemaMissing"
        with pytest.raises(FailureError) as info:
            await s.begin("r", "m", "c")
        assert info.value.failure.category is Category.SYSTEMIC
    finally:
        await s.close()


async def test_unreachable_database_is_systemic() -> None:
    """Nothing can work without the database: the worker pauses (retrying each message would only burn its
    delivery attempts)."""
    s = Store.open(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(FailureError) as info:
            await s.begin("r", "m", "c")
        assert (info.value.failure.category, info.value.failure.kind) == (Category.SYSTEMIC, "DatabaseUnavailable")
        assert "ConnectionRefusedError" in info.value.failure.detail
    finally:
        await s.close()
    assert classify(OSError("boom")).failure.category is Category.SYSTEMIC
    assert classify(ConnectionResetError("reset by peer")).failure.category is Category.TRANSIENT  # lost, not down


def _translated(error: Exception) -> Exception:
    """An asyncpg error as SQLAlchemy raises it (the adapted DBAPI error, wrapped)."""
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
    from sqlalchemy.exc import OperationalError

    return OperationalError("SELECT 1", {}, AsyncAdapt_asyncpg_dbapi.OperationalError(str(error), error))  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("error", "category"), [
    ("CannotConnectNowError", Category.SYSTEMIC),  # 57P03: the server is starting up or shutting down
    ("ConnectionFailureError", Category.SYSTEMIC),  # 08006
    ("ClientCannotConnectError", Category.SYSTEMIC),  # 08001
    ("AdminShutdownError", Category.TRANSIENT),  # 57P01: this connection was killed; the next one works
    ("ConnectionDoesNotExistError", Category.TRANSIENT),  # 08003: the same, when asyncpg saw the close first
    ("SerializationError", Category.TRANSIENT),  # 40001
])
def test_server_errors_by_sqlstate(error: str, category: Category) -> None:
    import asyncpg

    failure = classify(_translated(getattr(asyncpg.exceptions, error)("server says no"))).failure
    assert (failure.category, failure.kind) == (category, "DatabaseUnavailable")


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


async def test_a_connection_killed_mid_transaction_is_transient(pg_server: PostgresServer, pg_database: str) -> None:
    """A killed backend (failover, an administrator): transient, the next attempt gets a new connection."""
    from sqlalchemy.exc import DBAPIError

    s = Store.open(async_database_url(pg_database))
    try:
        async with s.engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            assert await pg_server.terminate_backends(database_name(pg_database)) == {pid}
            with pytest.raises(DBAPIError) as info:
                await conn.execute(text("SELECT 1"))
        failure = classify(info.value).failure
        assert (failure.category, failure.kind) == (Category.TRANSIENT, "DatabaseUnavailable")
        await s.upgrade()  # and the pool serves a working connection next
        assert await s.begin("r", "m", "c") == "received"
    finally:
        await s.close()


async def test_ledger_states(store: Store) -> None:
    assert await store.begin("r1", "m1", "c") == "received"
    assert (await store.claim("r1", 30)).status == "claimed"
    assert (await store.claim("r1", 30)).status == "held"  # another delivery of the same request is posting
    await store.finish("r1", "sent", activity_id="a-1")
    assert await store.begin("r1", "m2", "c") == "sent"
    claim = await store.claim("r1", 30)
    assert (claim.status, claim.activity_id) == ("done", "a-1")
    row = await store.request_row("r1")
    assert row is not None and row["attempts"] == 2 and row["message_id"] == "m1"


async def test_expired_lease_can_be_claimed_again(store: Store) -> None:
    await store.begin("r2", "m", "c")
    assert (await store.claim("r2", -1)).status == "claimed"  # lease already over: the poster crashed
    assert (await store.claim("r2", 30)).status == "claimed"
    await store.finish("r2", "received", error="HTTP 503")
    assert (await store.claim("r2", 30)).status == "claimed"
    await store.finish("r2", "failed", error="HTTP 403")
    assert (await store.claim("r2", 30)).status == "claimed"  # a duplicate after a permanent failure may retry


async def test_references_and_items(store: Store) -> None:
    ref = StoredReference("c1", "https://smba.example/", "t1", "28:bot", "msteams", {"conversation": {"id": "c1"}},
                          True)
    assert await store.put_references([ref]) == 1
    assert await store.reference("c1") == ref
    await store.deactivate("c1")
    got = await store.reference("c1")
    assert got is not None and not got.active
    assert await store.put_references([ref]) == 1  # re-import reactivates
    got = await store.reference("c1")
    assert got is not None and got.active
    assert await store.reference("missing") is None
    assert await store.begin_with_reference("r9", "m", "c1") == ("received", got)
    assert await store.begin_with_reference("r10", "m", "missing") == ("received", None)
    now = datetime.now(UTC)
    await store.put_items([
        (DigestItem("ana", "a", "", None, 1.0, now - timedelta(days=1)), "eng"),
        (DigestItem("ana", "b", "", None, 3.0, now - timedelta(days=2)), None),
        (DigestItem("bo", "c", "", None, 2.0, now - timedelta(days=1)), "eng"),
        (DigestItem("ana", "old", "", None, 9.0, now - timedelta(days=20)), None),
    ])
    since = now - timedelta(days=7)
    assert [i.title for i in await store.items(since, 10)] == ["b", "c", "a"]
    assert [i.title for i in await store.items(since, 2)] == ["b", "c"]
    assert [i.title for i in await store.items(since, 10, owner="ana")] == ["b", "a"]
    assert [i.title for i in await store.items(since, 10, audience="eng")] == ["c", "a"]
    assert all(i.created_at.tzinfo is not None for i in await store.items(since, 10))


def test_import_files_parse_and_name_bad_entries() -> None:
    refs = parse_references('[{"conversation_id": "c", "service_url": "https://s/", "tenant_id": "t", '
                            '"bot_id": "28:b"}]')
    assert refs[0].reference["conversation"] == {"id": "c", "conversationType": "channel", "tenantId": "t"}
    assert refs[0].tenant_id == "t" and refs[0].active
    items = parse_items('{"owner": "o", "title": "t", "score": 2, "created_at": "2026-11-01T10:00:00"}')
    assert items[0][0].created_at.tzinfo is UTC
    with pytest.raises(ImportError_, match=r"\[0.service_url\]"):
        parse_references('[{"conversation_id": "c", "service_url": "ftp://x"}]')
    with pytest.raises(ImportError_, match=r"\[1.title\]"):
        parse_items('[{"owner": "o", "title": "t"}, {"owner": "o"}]')
    with pytest.raises(ImportError_, match="not JSON"):
        parse_items("nope")
