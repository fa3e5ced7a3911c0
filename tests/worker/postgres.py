"""A real PostgreSQL server (Debian's `postgresql` package) in a temp dir, run as a non-root user; one per test
process (each xdist worker) shared by the worker and store tests, a fresh database per test."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubeconfig import free_port

USER = "digest"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does this)")
    return Path(found[-1]).parent


class PostgresServer:
    """One initialised data directory and its server on a fixed port: it can be stopped and started again."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = USER
        self._run_as: dict[str, int] = {}
        if os.geteuid() == 0:  # initdb refuses root: run the server as the `postgres` system user
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        self._env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        self._pg([self.bindir / "initdb", "-D", self.data, "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--no-sync"])

    def _pg(self, args: list[Any], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(args, check=check, capture_output=True, env=self._env,  # type: ignore[call-overload, no-any-return]
                              **self._run_as)

    def start(self) -> PostgresServer:
        self._pg([self.bindir / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200", "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: connections are closed and the server shuts down cleanly; `immediate`: as a crash."""
        self._pg([self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    async def query(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement on the `postgres` database (a connection of its own) and return its rows."""
        import asyncpg

        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres")
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def create_database(self, name: str) -> str:
        asyncio.run(self.query(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        asyncio.run(self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def terminate_backends(self, database: str) -> set[int]:
        """Kill every server process serving `database` (as an administrator or a failover would); their pids."""
        rows = await self.query("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                database)
        return {int(row[0]) for row in rows if row[1]}

    async def backends(self, database: str) -> set[int]:
        """The pids of the server processes serving `database`."""
        return {int(row[0]) for row in await self.query("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                                        database)}


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A server of its own (for tests that stop it)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


_shared: list[PostgresServer] = []
_users = [0]


@contextmanager
def shared_server() -> Iterator[PostgresServer]:
    """The test process's server: started by the first user, removed when the last one is done."""
    if not _shared:
        _shared.append(PostgresServer().start())
    _users[0] += 1
    try:
        yield _shared[0]
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _shared.pop().remove()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """Imported by the worker and the store tests' conftests: one server per test process all the same."""
    with shared_server() as server:
        yield server


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new, empty database (its URL), dropped afterwards with whatever is still connected to it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]
