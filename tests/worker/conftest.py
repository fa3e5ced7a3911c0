"""Fixtures for the worker tests: emulator with the worker's queues, fake Teams endpoints, SQLite and PostgreSQL.

`stack` runs each test on both databases (a fresh SQLite file; a fresh database on the test process's PostgreSQL
server); `sqlite_stack` is for tests whose subject is not the database (tokens, HTTP clients, the event loop);
`pg_stack` for PostgreSQL's own faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from digest_sbemulator.server import EmulatorServer
from tests.support.sbemulator import running_emulator
from tests.worker.fakes import FakeConnector, FakeTokenEndpoint
from tests.worker.harness import QUEUES, SECRET, Stack
from tests.worker.postgres import PostgresServer, fresh_database, pg_server

__all__ = ["pg_server"]  # the shared server fixture, defined with the server


@pytest.fixture
def worker_emulator() -> Iterator[EmulatorServer]:
    with running_emulator(QUEUES) as server:
        yield server


@pytest.fixture
def connector() -> Iterator[FakeConnector]:
    fake = FakeConnector().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTokenEndpoint]:
    fake = FakeTokenEndpoint(tmp_path, SECRET).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.cert))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/worker.db"


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def stack(worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
          database_url: str) -> Stack:
    return Stack(worker_emulator, connector, tokens, database_url)


@pytest.fixture
def sqlite_stack(worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
                 sqlite_url: str) -> Stack:
    return Stack(worker_emulator, connector, tokens, sqlite_url)


@pytest.fixture
def pg_stack(worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
             pg_url: str) -> Stack:
    return Stack(worker_emulator, connector, tokens, pg_url)
