"""Fixtures for the digest-pinning tests: real `docker-registry` processes on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.registry import Mode, Registry


@pytest_asyncio.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """An anonymous registry."""
    (tmp_path / "anonymous").mkdir()
    server = await Registry(tmp_path / "anonymous").start()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def basic_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry with htpasswd basic auth (tests.support.registry.USER / PASSWORD)."""
    (tmp_path / "htpasswd").mkdir()
    server = await Registry(tmp_path / "htpasswd", mode="htpasswd").start()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def token_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry with bearer-token auth, its token endpoint in the test's event loop."""
    (tmp_path / "token").mkdir()
    server = await Registry(tmp_path / "token", mode="token").start()
    yield server
    await server.close()


@pytest_asyncio.fixture(params=["htpasswd", "token"])
async def private_registry(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    """A registry that needs credentials: htpasswd basic auth, then bearer tokens."""
    mode: Mode = request.param
    (tmp_path / mode).mkdir()
    server = await Registry(tmp_path / mode, mode=mode).start()
    yield server
    await server.close()
