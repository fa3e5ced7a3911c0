"""An emulator with the queues the dead-letter tests need (its own, so the shared fixture stays small)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digest_sbemulator.config import build_config
from digest_sbemulator.server import EmulatorServer
from tests.support.kubeconfig import free_port

DLQ_QUEUES = [
    "orders:MaxDeliveryCount=3,LockDuration=PT30S",
    "dedupe:RequiresDuplicateDetection=true,DuplicateDetectionHistoryTimeWindow=PT5M,LockDuration=PT30S",
    "parked:LockDuration=PT30S",
    "other:LockDuration=PT30S",
]


@pytest.fixture
def sb() -> Iterator[EmulatorServer]:
    server = EmulatorServer(build_config(queue_flags=DLQ_QUEUES), port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cs(sb: EmulatorServer) -> str:
    return sb.connection_string()
