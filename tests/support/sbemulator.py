"""Pytest fixtures: the local Service Bus emulator on a free port, stopped after the test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType

from digest_sbemulator.config import build_config
from digest_sbemulator.server import EmulatorServer
from tests.support.kubeconfig import free_port

QUEUES = ["orders:MaxDeliveryCount=3,LockDuration=PT5S", "short-locks:LockDuration=PT1S,MaxDeliveryCount=2",
          "dedupe:RequiresDuplicateDetection=true", "expiring:DefaultMessageTimeToLive=PT1S,"
          "DeadLetteringOnMessageExpiration=true"]


@contextlib.contextmanager
def running_emulator(queue_flags: list[str]) -> Iterator[EmulatorServer]:
    """An emulator with these ad-hoc queues on a free port, stopped afterwards."""
    server = EmulatorServer(build_config(queue_flags=queue_flags), port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def locked_messages(server: EmulatorServer, queue: str) -> int:
    """How many messages of `queue` are locked right now (delivered to a peek-lock receiver, not yet settled)."""
    return int(server.call(lambda: len(server.namespace.queue(queue).main.locks)))


def granted_credit(server: EmulatorServer, queue: str) -> list[int]:
    """For each client receiver link on `queue` (attach order): the link credit it has granted in all, as the
    emulator sees it (AMQP: deliveries so far + credit still open)."""
    def read() -> list[int]:
        return [link.delivery_count + link.credit for link in server.broker.senders
                if link.address is not None and link.address.queue is server.namespace.queue(queue)
                and not link.address.dead_letter]
    return list(server.call(read))


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with running_emulator(QUEUES) as server:
        yield server


@pytest.fixture
def connection_string(emulator: EmulatorServer) -> str:
    return emulator.connection_string()


BODIES: list[dict[str, Any]] = [
    {"data_body": [b"first", b"second"]}, {"value_body": {"k": [1, 2.5, "three"]}}, {"sequence_body": [[1, "a"]]},
]
"""Every AMQP body type: several data sections, an amqp-value, an amqp-sequence."""


def amqp_body(message: AmqpAnnotatedMessage) -> Any:
    """The body as the SDK hands it back: strings inside VALUE and SEQUENCE bodies come back as bytes."""
    body = message.body if message.body_type == AmqpMessageBodyType.VALUE else list(message.body)
    return _bytes(body)


def _bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_bytes(v) for v in value]
    if isinstance(value, dict):
        return {_bytes(k): _bytes(v) for k, v in value.items()}
    return value
