"""Fixtures for the worker tests: emulator with the worker's queues, fake Teams endpoints, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest_sbemulator.server import EmulatorServer
from tests.support.sbemulator import running_emulator
from tests.worker.fakes import FakeConnector, FakeTokenEndpoint
from tests.worker.harness import QUEUES, SECRET, Stack
from tests.worker.postgres import PostgresServer, create_database, postgres_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


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
def pg_url(pg_server: PostgresServer) -> str:
    return create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def stack(worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
          sqlite_url: str) -> Stack:
    return Stack(worker_emulator, connector, tokens, sqlite_url)


@pytest.fixture
def any_db_stack(worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
                 database_url: str) -> Stack:
    return Stack(worker_emulator, connector, tokens, database_url)
