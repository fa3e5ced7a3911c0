"""The ``kube_api`` fixture: a fresh kube-apiserver emulator per test (see ``tests.support.kubeapi``), and
``operators``: real operators a test starts against it, stopped at the end.

Enable it with ``pytest_plugins = ['tests.support.kube_fixture']`` (in the root conftest or a test module).
"""
import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.kubeapi import KubeApi, run_kube_api
from tests.support.operator_thread import OperatorThread


@pytest_asyncio.fixture
async def kube_api() -> AsyncIterator[KubeApi]:
    """The emulator on a free loopback port; yields the handle (url, emulator, request log, API helpers)."""
    async with run_kube_api() as api:
        yield api


@pytest_asyncio.fixture
async def operators(kube_api: KubeApi) -> AsyncIterator[list[OperatorThread]]:
    """Operators started by a test (append them); stopped while the emulator's event loop still serves their last
    requests."""
    started: list[OperatorThread] = []
    yield started
    for op in started:
        await asyncio.to_thread(op.stop)
