"""The worker's database I/O: delivery ledger, conversation references, digest items.

Every method maps database errors to classified failures: a database that cannot be reached and a missing schema are
systemic (the worker pauses, and resumes once the database answers); any other database error is transient (the
message is retried).

The per-message statements are built once (Core constructs with bound parameters, `_statements`) and written once as
operations on a small `_Sql` interface: on a SQLite file they run compiled, through the stdlib driver, group-committed
in the ledger's thread (`db.sqlite_ledger`); elsewhere (PostgreSQL) through the async engine, a transaction each.
The async engine (and with it SQLAlchemy's asyncio extension and ORM) is created on first use only: a SQLite worker
whose schema is current never imports it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from digest_worker import failures
from digest_worker.card import DigestItem
from digest_worker.db import migrate
from digest_worker.db.sqlite_ledger import SqliteLedger, Statement
from digest_worker.db.sqlite_sql import STATEMENTS
from digest_worker.db.states import SENT, SKIPPED

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MISSING_TABLE_HINTS = ("no such table", "does not exist", "undefinedtable")

DONE = (SENT, SKIPPED)
TABLES = ("digest_requests", "conversation_references", "digest_items")


def db_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database failed" (SQLAlchemy's only once it is imported: without it, none of
    them can be raised)."""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, TimeoutError)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        errors += (SQLAlchemyError,)
    return errors
T = TypeVar("T")


@dataclass(frozen=True)
class StoredReference:
    conversation_id: str
    service_url: str
    tenant_id: str | None
    bot_id: str | None
    channel_id: str
    reference: dict[str, Any]
    active: bool


@dataclass(frozen=True)
class Claim:
    """Result of trying to take the right to post: `claimed`, or why not."""

    status: Literal["claimed", "done", "held"]
    activity_id: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Sql(Protocol):
    """The named statements, on one connection inside one transaction."""

    def first(self, name: str, values: dict[str, Any]) -> dict[str, Any] | None: ...

    def all(self, name: str, values: dict[str, Any]) -> list[dict[str, Any]]: ...

    def rowcount(self, name: str, values: dict[str, Any]) -> int: ...


class _SqliteSql:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._statements = _compiled()

    def first(self, name: str, values: dict[str, Any]) -> dict[str, Any] | None:
        return self._statements[name].first(self._conn, values)

    def all(self, name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        return self._statements[name].all(self._conn, values)

    def rowcount(self, name: str, values: dict[str, Any]) -> int:
        return self._statements[name].execute(self._conn, values).rowcount


class _AlchemySql:
    def __init__(self, conn: Connection) -> None:
        from digest_worker.db.statements import statements

        self._conn = conn
        self._statements = statements(conn.dialect.name)

    def first(self, name: str, values: dict[str, Any]) -> dict[str, Any] | None:
        row = self._conn.execute(self._statements[name], values).mappings().first()
        return dict(row) if row is not None else None

    def all(self, name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(self._statements[name], values).mappings().all()]

    def rowcount(self, name: str, values: dict[str, Any]) -> int:
        return int(self._conn.execute(self._statements[name], values).rowcount)


# engines


def create_engine(url: str) -> AsyncEngine:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    if url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time, and concurrent writers on several connections wait in
        # SQLite's sleeping busy handler (tens of ms each); queueing for the one connection costs nothing.
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=10)


def sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file, or None (another database, `:memory:`, a `file:` URI, a URL with query
    options: those go through SQLAlchemy). Parsed like SQLAlchemy's `make_url` without importing it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.partition("+")[0] != "sqlite" or "?" in rest or not rest.startswith("/"):
        return None
    database = rest[1:]
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


# A connection that was there and is gone (a killed backend, a reset): the next attempt gets a new one.
_LOST_SQLSTATES = frozenset({"08003", "57P01"})  # connection_does_not_exist (asyncpg: closed under us), admin_shutdown
_LOST_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def unreachable(exc: BaseException) -> bool:
    """The database cannot be reached at all: no connection could be made (refused, no route, name unknown, timed
    out), or the server refuses connections while it starts or shuts down (SQLSTATE class 08, 57P03). Not a
    connection lost mid-statement (a killed backend: 57P01, or 08003 when the client saw the socket close first;
    a reset): the next attempt gets a new one, and if the server is down that attempt is refused."""
    if isinstance(exc, _LOST_ERRORS):
        return False
    if isinstance(exc, OSError | TimeoutError):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _LOST_SQLSTATES:
        return False
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate == "57P03")


def classify(exc: BaseException) -> failures.FailureError:
    text = str(exc).lower().replace("_", "")
    database_error = isinstance(exc, db_errors()) and not isinstance(exc, OSError | TimeoutError)
    if database_error and any(h.replace("_", "") in text for h in MISSING_TABLE_HINTS):
        return failures.systemic("DatabaseSchemaMissing", f"the worker's tables are missing: {_first_line(exc)}")
    detail = f"{type(exc).__name__}: {_first_line(exc)}"
    if unreachable(exc):
        # systemic, not transient: retrying each message would only burn its delivery attempts (the whole queue is
        # dead-lettered within a second of an outage); the worker pauses and resumes when the database answers
        return failures.systemic("DatabaseUnavailable", detail)
    return failures.transient("DatabaseUnavailable", detail)


def _reference(row: dict[str, Any] | None) -> StoredReference | None:
    if row is None:
        return None
    return StoredReference(row["conversation_id"], row["service_url"], row["tenant_id"], row["bot_id"],
                           row["channel_id"], json.loads(row["reference"]), bool(row["active"]))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone() \
            is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def _sqlite_tables_readable(conn: sqlite3.Connection) -> None:
    for table in TABLES:
        conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        path = sqlite_file(url)
        self._ledger = SqliteLedger(path) if path is not None else None

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(url)

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (migrations, imports, PostgreSQL), created on first use."""
        if self._engine is None:
            self._engine = create_engine(self.url)
        return self._engine

    @property
    def ledger(self) -> SqliteLedger | None:
        return self._ledger

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        if self._ledger is not None:
            await self._ledger.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except db_errors() as exc:
            raise classify(exc) from exc

    async def _run(self, work: Callable[[_Sql], T], scan: bool = False) -> T:
        """Run `work` in one transaction: on a SQLite file in the ledger's batch (group commit), or with `scan` (a read
        of possibly many rows) in the ledger's thread beside the writes (WAL), never holding the event loop; elsewhere
        through the async engine (`run_sync`: PostgreSQL keeps its pool of concurrent connections)."""
        try:
            if self._ledger is not None:
                run = self._ledger.run_alone if scan else self._ledger.run
                return await run(lambda conn: work(_SqliteSql(conn)))
            async with self.engine.begin() as conn:
                return await conn.run_sync(lambda sync: work(_AlchemySql(sync)))
        except db_errors() as exc:
            raise classify(exc) from exc

    # schema

    async def revision(self) -> str | None:
        try:
            if self._ledger is not None:
                return await self._ledger.run_alone(_sqlite_revision)
            return await migrate.current_revision(self.engine)
        except db_errors() as exc:
            raise classify(exc) from exc

    async def upgrade(self) -> None:
        if await self.revision() == migrate.HEAD:
            return
        try:
            await migrate.upgrade(self.engine)
        except db_errors() as exc:
            raise classify(exc) from exc

    async def check_schema(self) -> None:
        """Systemic failure unless the schema is at the head revision."""
        current = await self.revision()
        head = migrate.HEAD
        if current != head:
            raise failures.systemic("DatabaseSchemaMissing",
                                    f"schema revision {current or 'none'}, expected {head}: run the migrations")
        if self._ledger is not None:  # the tables are really there
            try:
                await self._ledger.run_alone(_sqlite_tables_readable)
            except db_errors() as exc:
                raise classify(exc) from exc
            return
        from sqlalchemy import text

        async with self._tx() as conn:
            for table in TABLES:
                await conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1"))

    # ledger

    async def begin(self, request_id: str, message_id: str | None, conversation_id: str) -> str:
        """Record the request as received (once) and count the attempt; return its state. One statement."""
        values = {"p_request": request_id, "p_message": message_id, "p_conversation": conversation_id,
                  "p_now": utcnow()}

        def work(sql: _Sql) -> str:
            row = sql.first("upsert_received", values)
            assert row is not None
            return str(row["state"])

        return await self._run(work)

    async def begin_with_reference(self, request_id: str, message_id: str | None,
                                   conversation_id: str) -> tuple[str, StoredReference | None]:
        """`begin` and `reference` in one transaction (one round trip fewer per message)."""
        values = {"p_request": request_id, "p_message": message_id, "p_conversation": conversation_id,
                  "p_now": utcnow()}

        def work(sql: _Sql) -> tuple[str, StoredReference | None]:
            row = sql.first("upsert_received", values)
            assert row is not None
            return str(row["state"]), _reference(sql.first("reference", {"p_conversation": conversation_id}))

        return await self._run(work)

    async def claim(self, request_id: str, lease_seconds: float) -> Claim:
        """Atomically move to `sending` unless already done or claimed by a live lease elsewhere."""
        now = time.time()
        values = {"p_request": request_id, "p_lease_now": now, "p_lease_until": now + lease_seconds,
                  "p_now": utcnow()}

        def work(sql: _Sql) -> Claim:
            if sql.rowcount("claim", values) == 1:
                return Claim("claimed")
            row = sql.first("claim_state", {"p_request": request_id})
            assert row is not None
            return Claim("done", row["activity_id"]) if row["state"] in DONE else Claim("held")

        return await self._run(work)

    async def finish(self, request_id: str, state: str, *, activity_id: str | None = None,
                     error: str | None = None) -> None:
        values = {"p_request": request_id, "p_state": state, "p_activity": activity_id, "p_error": error,
                  "p_now": utcnow()}
        await self._run(lambda sql: sql.rowcount("finish", values))

    async def request_row(self, request_id: str) -> dict[str, Any] | None:
        return await self._run(lambda sql: sql.first("request_row", {"p_request": request_id}))

    # conversation references

    async def reference(self, conversation_id: str) -> StoredReference | None:
        return await self._run(lambda sql: _reference(sql.first("reference", {"p_conversation": conversation_id})))

    async def deactivate(self, conversation_id: str) -> None:
        values = {"p_conversation": conversation_id, "p_now": utcnow()}
        await self._run(lambda sql: sql.rowcount("deactivate", values))

    async def put_references(self, refs: Iterable[StoredReference]) -> int:
        from sqlalchemy import insert, update

        from digest_worker.db.tables import conversation_references

        count = 0
        async with self._tx() as conn:
            for ref in refs:
                values = {"service_url": ref.service_url, "tenant_id": ref.tenant_id, "bot_id": ref.bot_id,
                          "channel_id": ref.channel_id, "reference": json.dumps(ref.reference, sort_keys=True),
                          "active": ref.active, "updated_at": utcnow()}
                done = await conn.execute(update(conversation_references).where(
                    conversation_references.c.conversation_id == ref.conversation_id).values(**values))
                if done.rowcount == 0:
                    await conn.execute(insert(conversation_references).values(conversation_id=ref.conversation_id,
                                                                              **values))
                count += 1
        return count

    # digest items

    async def put_items(self, items: Iterable[tuple[DigestItem, str | None]]) -> int:
        rows = [{"owner": i.owner, "audience": audience, "title": i.title, "summary": i.summary, "url": i.url,
                 "score": i.score, "created_at": i.created_at} for i, audience in items]
        from sqlalchemy import insert

        from digest_worker.db.tables import digest_items

        if rows:
            async with self._tx() as conn:
                await conn.execute(insert(digest_items), rows)
        return len(rows)

    async def items(self, since: datetime, limit: int, owner: str | None = None,
                    audience: str | None = None) -> Sequence[DigestItem]:
        name = f"items:{owner is not None}:{audience is not None}"
        values: dict[str, Any] = {"p_since": since, "p_limit": limit}
        if owner is not None:
            values["p_owner"] = owner
        if audience is not None:
            values["p_audience"] = audience
        rows = await self._run(lambda sql: sql.all(name, values), scan=True)
        return [DigestItem(r["owner"], r["title"], r["summary"], r["url"], float(r["score"]), _aware(r["created_at"]))
                for r in rows]



@cache
def _compiled() -> dict[str, Statement]:
    return {name: Statement(*spec) for name, spec in STATEMENTS.items()}


def warm_up() -> None:
    """Prepare the SQLite statements now (start-up, off the first message's path)."""
    _compiled()
