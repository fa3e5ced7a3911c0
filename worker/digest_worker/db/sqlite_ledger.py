"""The store's statements on a SQLite file: run by the stdlib driver, group-committed, on the event loop's thread
while the database is free and in the ledger's own thread when it is not.

Every statement is a SQLAlchemy Core construct (`db.statements`; the tables and types stay defined once, in
`db.tables`) compiled ahead of time for SQLite (`db/sqlite_sql.py`); executing it is one `sqlite3` call, with the
values converted as SQLAlchemy's SQLite types convert them (`CONVERSIONS`, checked against SQLAlchemy by a unit test),
instead of SQLAlchemy's per-execution machinery (statement construction, cache-key generation, result metadata:
~0.4 ms of CPU per ledger step, measured) and without importing SQLAlchemy at all.

Group commit: every operation submitted during one event-loop turn, plus whatever arrives while the previous batch
runs, goes into **one** transaction (`BEGIN IMMEDIATE` … `COMMIT`). An operation's awaiter is resumed only after its
transaction committed, so "committed before the next step" holds for each message exactly as with a transaction per
step; what changes is that 16 messages' steps cost one commit. If a batch fails, it is rolled back and each of its
operations is retried alone in its own transaction, so one bad operation fails only its own caller.

Where a batch runs: on the event loop's thread, at the start of the next loop turn, when `BEGIN IMMEDIATE` gets the
write lock at once (a connection with no busy wait). A WAL commit without fsync takes tens of microseconds there,
while the hop to a thread and back cost ~1 ms per step under load (GIL hand-offs; measured: three ledger steps took
3.5 ms of a message's 57 ms at 50 ms per Teams post). When the lock is taken (another process writes: an import, a
migration, a second worker on the same file) or the database cannot be opened, the batch goes to the ledger's thread,
which waits for the lock there (busy timeout) instead of in the event loop. WAL checkpoints, which write the database
file and fsync, run in that thread too, never in the loop (the loop's connection has auto-checkpoint off).

Durability: WAL with `synchronous=NORMAL`: a commit survives a crash of the process (what the idempotency protocol
needs: the worker, not the machine, is what gets killed); a power loss can lose the last transactions before a
checkpoint, which for this embedded default database is accepted (production runs PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Converter = Callable[[Any], Any]


def _datetime_to_sql(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME storage format (the time zone is not stored)
    if value is None:
        return None
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")


def _sql_to_datetime(value: Any) -> Any:
    return None if value is None else datetime.fromisoformat(value)


def _optional(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


# conversion kind → (to SQL, from SQL)
CONVERSIONS: dict[str, tuple[Converter, Converter]] = {
    "datetime": (_datetime_to_sql, _sql_to_datetime),
    "boolean": (_optional(int), _optional(bool)),
    "float": (_optional(float), _optional(float)),
    "integer": (_optional(int), _optional(int)),
}


class Statement:
    """One compiled statement: SQL with named parameters, fixed values, per-parameter and per-column conversions."""

    def __init__(self, sql: str, defaults: Mapping[str, Any], conversions: Mapping[str, str],
                 results: Sequence[tuple[str, str | None]]) -> None:
        self.sql = sql
        self._defaults = dict(defaults)
        self._binds = {name: CONVERSIONS[kind][0] for name, kind in conversions.items()}
        self.columns = [key for key, _ in results]
        self._results = [CONVERSIONS[kind][1] if kind else None for _, kind in results]

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self._defaults, **values}
        for name, convert in self._binds.items():
            if name in params:
                params[name] = convert(params[name])
        return params

    def execute(self, conn: sqlite3.Connection, values: Mapping[str, Any] | None = None) -> sqlite3.Cursor:
        return conn.execute(self.sql, self.params(values or {}))

    def row(self, raw: Sequence[Any] | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        return {key: convert(value) if convert is not None else value
                for key, convert, value in zip(self.columns, self._results, raw, strict=True)}

    def first(self, conn: sqlite3.Connection, values: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        return self.row(self.execute(conn, values).fetchone())

    def all(self, conn: sqlite3.Connection, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = (self.row(r) for r in self.execute(conn, values).fetchall())
        return [r for r in rows if r is not None]


class SqliteLedger:
    """Runs operations (functions of a `sqlite3.Connection`) batched into one transaction each: in the event loop
    while the database's write lock is free, in the ledger's thread while it is not."""

    CHECKPOINT_EVERY = 256  # batches committed in the loop between two checkpoints (in the thread)

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self._path = path
        self._timeout = timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-sqlite")
        self._inline: sqlite3.Connection | None = None  # the loop's: no busy wait, no auto-checkpoint
        self._conn: sqlite3.Connection | None = None  # the thread's: waits out a busy lock, checkpoints
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint: Future[Any] | None = None
        self._since_checkpoint = 0
        self._closed = False
        self.batches = 0  # transactions committed (tests and the benchmark read them)
        self.operations = 0
        self.threaded_batches = 0  # of which in the thread (the write lock was taken, or no inline connection)
        self.checkpoints = 0

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` in a transaction; return once that transaction has committed."""
        if self._closed:
            raise _closed_error()
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((operation, future))
        if not self._running:
            self._running = True
            loop.call_soon(self._flush)  # the operations of the rest of this loop turn join the batch
        return await future

    async def run_alone(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` in the ledger's thread outside any batch (it manages its own transactions)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: operation(self._connect()))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._running = False
            return
        operations = [op for op, _ in batch]
        if self._closed:
            self._resolve(batch, [(False, _closed_error())] * len(batch))
            self._running = False
            return
        try:
            results = self._execute_inline(operations)
        except Exception as exc:  # e.g. a failed ROLLBACK: every caller gets the error, none is left waiting
            self._drop_inline()  # (it may still be inside the transaction, holding the write lock)
            results = [(False, exc)] * len(operations)
        if results is not None:
            self._resolve(batch, results)  # (the awaiters resume in the next turn: nothing joins meanwhile)
            self._running = False
            self._maybe_checkpoint()
            return
        loop = self._loop
        assert loop is not None
        try:
            done: Future[list[tuple[bool, Any]]] = self._thread.submit(self._execute_threaded, operations)
        except RuntimeError as exc:  # the thread is shut down
            self._resolve(batch, [(False, exc)] * len(batch))
            self._running = False
            return
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._resolve_threaded, batch, f))

    def _resolve_threaded(self, batch: list[tuple[Operation, asyncio.Future[Any]]],
                          done: Future[list[tuple[bool, Any]]]) -> None:
        try:
            results = done.result()
        except BaseException as exc:
            results = [(False, exc)] * len(batch)
        self._resolve(batch, results)
        self._flush()

    @staticmethod
    def _resolve(batch: list[tuple[Operation, asyncio.Future[Any]]], results: list[tuple[bool, Any]]) -> None:
        for (_op, future), (ok, value) in zip(batch, results, strict=True):
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    # in the loop

    def _execute_inline(self, operations: list[Operation]) -> list[tuple[bool, Any]] | None:
        """The batch's results, or None when it must go to the thread, with nothing of it committed: the write lock
        is taken, the database cannot be opened without waiting, or a batch of several failed (the thread runs its
        operations one by one, each waiting out a lock that another writer may take in between)."""
        try:
            if self._inline is None:
                conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
                try:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        raise sqlite3.OperationalError("not in WAL mode yet")  # switching waits: the thread does it
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                except BaseException:
                    conn.close()
                    raise
                self._inline = conn
            self._inline.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # busy, or not openable without waiting (or at all): the thread tells the callers
            return None
        return self._transaction(self._inline, operations, isolate=False)

    def _maybe_checkpoint(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._since_checkpoint = 0
            with contextlib.suppress(RuntimeError):  # the thread is shut down: nothing left to checkpoint for
                self._checkpoint = self._thread.submit(self._wal_checkpoint)

    def _drop_inline(self) -> None:
        conn, self._inline = self._inline, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _transaction(self, conn: sqlite3.Connection, operations: list[Operation],
                     isolate: bool = True) -> list[tuple[bool, Any]] | None:
        """Run `operations` in the transaction just begun on `conn`: commit; or roll back, then run each alone
        (`isolate`) or return None."""
        try:
            results = [(True, op(conn)) for op in operations]
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # (if this fails, the caller drops the connection)
            if len(operations) == 1:
                return [(False, exc)]
            if not isolate:
                return None
            return [self._alone(conn, op) for op in operations]  # isolate the failing one
        self.batches += 1
        self.operations += len(operations)
        return results

    def _alone(self, conn: sqlite3.Connection, operation: Operation) -> tuple[bool, Any]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return (False, exc)
        results = self._transaction(conn, [operation])
        assert results is not None  # (one operation: never handed on)
        return results[0]

    # in the thread

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _execute_threaded(self, operations: list[Operation]) -> list[tuple[bool, Any]]:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return [(False, exc)] * len(operations)
        self.threaded_batches += 1
        try:
            results = self._transaction(conn, operations)
            assert results is not None  # (isolated here)
            return results
        except Exception as exc:  # a failed ROLLBACK: drop the connection (it may still hold the write lock)
            self._close_thread_connection()
            return [(False, exc)] * len(operations)

    def _wal_checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # the next one checkpoints instead
            self._connect().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1

    def _close_thread_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def close(self) -> None:
        """Refuse new operations, fail the queued ones, close both connections (each on its own thread; a batch in
        the thread finishes first)."""
        self._closed = True
        self._drop_inline()  # in-loop batches run synchronously in the loop: none is using it now
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_thread_connection)
        self._thread.shutdown(wait=False)


def _closed_error() -> sqlite3.ProgrammingError:
    return sqlite3.ProgrammingError("the ledger is closed")
