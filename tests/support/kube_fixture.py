"""The ``kube_api`` fixture: a fresh kube-apiserver emulator per test (see ``tests.support.kubeapi``).

Enable it with ``pytest_plugins = ['tests.support.kube_fixture']`` (in the root conftest or a test module).
"""
from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.kubeapi import KubeApi, run_kube_api


@pytest_asyncio.fixture
async def kube_api() -> AsyncIterator[KubeApi]:
    """The emulator on a free loopback port; yields the handle (url, emulator, request log, API helpers)."""
    async with run_kube_api() as api:
        yield api
