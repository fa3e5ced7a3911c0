"""An emulator with the queues the dead-letter tests need (its own, so the shared fixture stays small)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digest_sbemulator.server import EmulatorServer
from tests.support.sbemulator import running_emulator

DLQ_QUEUES = [
    "orders:MaxDeliveryCount=3,LockDuration=PT30S",
    "dedupe:RequiresDuplicateDetection=true,DuplicateDetectionHistoryTimeWindow=PT5M,LockDuration=PT30S",
    "parked:LockDuration=PT30S",
    "other:LockDuration=PT30S",
]


@pytest.fixture
def sb() -> Iterator[EmulatorServer]:
    with running_emulator(DLQ_QUEUES) as server:
        yield server


@pytest.fixture
def cs(sb: EmulatorServer) -> str:
    return sb.connection_string()
