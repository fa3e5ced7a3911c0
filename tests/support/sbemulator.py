"""Pytest fixtures: the local Service Bus emulator on a free port, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digest_sbemulator.config import build_config
from digest_sbemulator.server import EmulatorServer
from tests.support.kubeconfig import free_port

QUEUES = ["orders:MaxDeliveryCount=3,LockDuration=PT5S", "short-locks:LockDuration=PT1S,MaxDeliveryCount=2",
          "dedupe:RequiresDuplicateDetection=true", "expiring:DefaultMessageTimeToLive=PT1S,"
          "DeadLetteringOnMessageExpiration=true"]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(build_config(queue_flags=QUEUES), port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connection_string(emulator: EmulatorServer) -> str:
    return emulator.connection_string()
