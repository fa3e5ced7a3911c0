"""The worker's database I/O: delivery ledger, conversation references, digest items.

Every method maps database errors to classified failures: an unreachable database is transient (messages are retried),
a missing schema is systemic (the worker pauses).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, Engine, and_, event, func, insert, make_url, or_, select, update
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from digest_worker import failures
from digest_worker.card import DigestItem
from digest_worker.db import migrate
from digest_worker.db.tables import conversation_references, digest_items, digest_requests

MISSING_TABLE_HINTS = ("no such table", "does not exist", "undefinedtable")

RECEIVED, SENDING, SENT, SKIPPED, FAILED = "received", "sending", "sent", "skipped", "failed"
DONE = (SENT, SKIPPED)
DB_ERRORS = (DBAPIError, SQLAlchemyError, OSError, TimeoutError)
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


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time, and concurrent writers on several connections wait in
        # SQLite's sleeping busy handler (tens of ms each); queueing for the one connection costs nothing.
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=10)


def sqlite_file_engine(url: str) -> Engine | None:
    """A synchronous engine (the stdlib driver) on the same SQLite file, or None (another database, `:memory:`).

    The per-message statements run on it in one dedicated thread, a whole transaction per hop: through aiosqlite
    every statement, commit and pool check-out is a hop between the event loop and aiosqlite's thread, and with one
    connection the transactions queue behind each other's hops (measured: ~3 ms of wall time per transaction under
    load, which capped the worker at ~110 msg/s).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") \
            or str(parsed.database).startswith("file:"):
        return None
    engine = create_sync_engine(parsed.set(drivername="sqlite"), connect_args={"timeout": 30},
                                pool_size=1, max_overflow=0)
    _sqlite_pragmas(engine)
    return engine


def classify(exc: BaseException) -> failures.FailureError:
    text = str(exc).lower().replace("_", "")
    if isinstance(exc, SQLAlchemyError) and any(h.replace("_", "") in text for h in MISSING_TABLE_HINTS):
        return failures.systemic("DatabaseSchemaMissing", f"the worker's tables are missing: {_first_line(exc)}")
    return failures.transient("DatabaseUnavailable", f"{type(exc).__name__}: {_first_line(exc)}")


def _reference(row: Any) -> StoredReference | None:
    if row is None:
        return None
    return StoredReference(row["conversation_id"], row["service_url"], row["tenant_id"], row["bot_id"],
                           row["channel_id"], json.loads(row["reference"]), bool(row["active"]))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class Store:
    def __init__(self, engine: AsyncEngine, sync_engine: Engine | None = None) -> None:
        self.engine = engine
        self._sync_engine = sync_engine
        self._thread: ThreadPoolExecutor | None = None
        if sync_engine is not None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-sqlite")

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(create_engine(url), sqlite_file_engine(url))

    async def close(self) -> None:
        await self.engine.dispose()
        if self._thread is not None and self._sync_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sync_engine.dispose)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except DB_ERRORS as exc:
            raise classify(exc) from exc

    async def _run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction: on SQLite files in the store's own thread (one hop), elsewhere through the
        async engine (`run_sync`: PostgreSQL keeps its pool of concurrent connections)."""
        try:
            if self._thread is not None and self._sync_engine is not None:
                engine = self._sync_engine

                def transaction() -> T:
                    with engine.begin() as conn:
                        return work(conn)

                return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        except DB_ERRORS as exc:
            raise classify(exc) from exc

    def _upsert_received(self, request_id: str, message_id: str | None, conversation_id: str) -> Any:
        now = utcnow()
        insert_ = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return (insert_(digest_requests)
                .values(request_id=request_id, message_id=message_id, conversation_id=conversation_id,
                        state=RECEIVED, attempts=1, created_at=now, updated_at=now)
                .on_conflict_do_update(index_elements=["request_id"],
                                       set_={"attempts": digest_requests.c.attempts + 1, "updated_at": now})
                .returning(digest_requests.c.state))

    # schema

    async def upgrade(self) -> None:
        try:
            await migrate.upgrade(self.engine)
        except DB_ERRORS as exc:
            raise classify(exc) from exc

    async def check_schema(self) -> None:
        """Systemic failure unless the schema is at the head revision."""
        try:
            current = await migrate.current_revision(self.engine)
        except DB_ERRORS as exc:
            raise classify(exc) from exc
        head = migrate.HEAD
        if current != head:
            raise failures.systemic("DatabaseSchemaMissing",
                                    f"schema revision {current or 'none'}, expected {head}: run the migrations")
        async with self._tx() as conn:  # the tables are really there
            for table in (digest_requests, conversation_references, digest_items):
                await conn.execute(select(func.count()).select_from(table).limit(1))

    # ledger

    async def begin(self, request_id: str, message_id: str | None, conversation_id: str) -> str:
        """Record the request as received (once) and count the attempt; return its state. One statement."""
        statement = self._upsert_received(request_id, message_id, conversation_id)
        return await self._run(lambda conn: str(conn.execute(statement).scalar_one()))

    async def begin_with_reference(self, request_id: str, message_id: str | None,
                                   conversation_id: str) -> tuple[str, StoredReference | None]:
        """`begin` and `reference` in one transaction (one round trip fewer per message)."""
        statement = self._upsert_received(request_id, message_id, conversation_id)
        query = select(conversation_references).where(conversation_references.c.conversation_id == conversation_id)

        def work(conn: Connection) -> tuple[str, StoredReference | None]:
            state = conn.execute(statement).scalar_one()
            return str(state), _reference(conn.execute(query).mappings().first())

        return await self._run(work)

    async def claim(self, request_id: str, lease_seconds: float) -> Claim:
        """Atomically move to `sending` unless already done or claimed by a live lease elsewhere."""
        now = time.time()
        statement = (update(digest_requests)
                     .where(digest_requests.c.request_id == request_id)
                     .where(or_(digest_requests.c.state.in_([RECEIVED, FAILED]),
                                and_(digest_requests.c.state == SENDING, digest_requests.c.lease_until < now)))
                     .values(state=SENDING, lease_until=now + lease_seconds, updated_at=utcnow()))

        def work(conn: Connection) -> Claim:
            if conn.execute(statement).rowcount == 1:
                return Claim("claimed")
            row = conn.execute(select(digest_requests.c.state, digest_requests.c.activity_id)
                               .where(digest_requests.c.request_id == request_id)).one()
            return Claim("done", row.activity_id) if row.state in DONE else Claim("held")

        return await self._run(work)

    async def finish(self, request_id: str, state: str, *, activity_id: str | None = None,
                     error: str | None = None) -> None:
        statement = (update(digest_requests).where(digest_requests.c.request_id == request_id)
                     .values(state=state, activity_id=activity_id, last_error=error, lease_until=None,
                             updated_at=utcnow()))
        await self._run(lambda conn: conn.execute(statement))

    async def request_row(self, request_id: str) -> dict[str, Any] | None:
        query = select(digest_requests).where(digest_requests.c.request_id == request_id)

        def work(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(query).mappings().first()
            return dict(row) if row else None

        return await self._run(work)

    # conversation references

    async def reference(self, conversation_id: str) -> StoredReference | None:
        query = select(conversation_references).where(conversation_references.c.conversation_id == conversation_id)
        return await self._run(lambda conn: _reference(conn.execute(query).mappings().first()))

    async def deactivate(self, conversation_id: str) -> None:
        statement = (update(conversation_references)
                     .where(conversation_references.c.conversation_id == conversation_id)
                     .values(active=False, updated_at=utcnow()))
        await self._run(lambda conn: conn.execute(statement))

    async def put_references(self, refs: Iterable[StoredReference]) -> int:
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
        if rows:
            async with self._tx() as conn:
                await conn.execute(insert(digest_items), rows)
        return len(rows)

    async def items(self, since: datetime, limit: int, owner: str | None = None,
                    audience: str | None = None) -> Sequence[DigestItem]:
        query = select(digest_items).where(digest_items.c.created_at >= since)
        if owner is not None:
            query = query.where(digest_items.c.owner == owner)
        if audience is not None:
            query = query.where(digest_items.c.audience == audience)
        query = query.order_by(digest_items.c.score.desc(), digest_items.c.created_at.desc(),
                               digest_items.c.id).limit(limit)
        rows = await self._run(lambda conn: conn.execute(query).mappings().all())
        return [DigestItem(r["owner"], r["title"], r["summary"], r["url"], float(r["score"]), _aware(r["created_at"]))
                for r in rows]
