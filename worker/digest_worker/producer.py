"""Digest requests for smoke and load tests: well-formed ones, and poison ones of every kind the worker must reject."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.servicebus.aio import ServiceBusClient

POISON_KINDS = ("not_json", "wrong_type", "out_of_range", "non_utf8", "empty", "value_body", "sequence_body")


def request_body(request_id: str, conversation_id: str, *, days: int = 7, max_items: int = 10,
                 owner: str | None = None, title: str | None = None) -> bytes:
    body: dict[str, Any] = {"request_id": request_id, "conversation_id": conversation_id,
                            "date_range_days": days, "max_items": max_items}
    if owner:
        body["owner"] = owner
    if title:
        body["title"] = title
    return json.dumps(body).encode()


def poison(kind: str, request_id: str, conversation_id: str) -> dict[str, Any]:
    """Keyword arguments for `AmqpAnnotatedMessage` (data_body / value_body / sequence_body)."""
    good = {"request_id": request_id, "conversation_id": conversation_id}
    if kind == "not_json":
        return {"data_body": b"this is not json"}
    if kind == "wrong_type":
        return {"data_body": json.dumps({**good, "max_items": "ten"}).encode()}
    if kind == "out_of_range":
        return {"data_body": json.dumps({**good, "date_range_days": 365}).encode()}
    if kind == "non_utf8":
        return {"data_body": b'{"conversation_id": "\xff\xfe"}'}
    if kind == "empty":
        return {"data_body": b""}
    if kind == "value_body":
        return {"value_body": 42}
    if kind == "sequence_body":
        return {"sequence_body": [[1, 2, 3]]}
    raise ValueError(f"unknown poison kind {kind!r}; one of {', '.join(POISON_KINDS)}")


def connect(connection_string: str | None, namespace: str | None) -> ServiceBusClient:
    """An async Service Bus client from a connection string, or a namespace FQDN with DefaultAzureCredential."""
    from azure.servicebus.aio import ServiceBusClient

    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string)
    if namespace:
        from azure.identity.aio import DefaultAzureCredential

        return ServiceBusClient(namespace, DefaultAzureCredential())
    raise ValueError("a connection string or a namespace is required")


def messages(count: int, poison_count: int, conversations: Sequence[str], *, days: int = 7, max_items: int = 10,
             owner: str | None = None, prefix: str = "req") -> list[Any]:
    """`count` requests `<prefix>-<n>` addressed round robin, with `poison_count` poison messages (every kind in
    turn) spread evenly among them."""
    from azure.servicebus import ServiceBusMessage
    from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties

    def bad(k: int) -> Any:
        rid = f"{prefix}-poison-{k}"
        return AmqpAnnotatedMessage(**poison(POISON_KINDS[k % len(POISON_KINDS)], rid, conversations[0]),
                                    properties=AmqpMessageProperties(message_id=rid))

    out: list[Any] = []
    every = max(count // poison_count, 1) if poison_count else 0
    p = 0
    for i in range(count):
        rid = f"{prefix}-{i}"
        out.append(ServiceBusMessage(request_body(rid, conversations[i % len(conversations)], days=days,
                                                  max_items=max_items, owner=owner),
                                     message_id=rid, content_type="application/json"))
        if p < poison_count and (i + 1) % every == 0:
            out.append(bad(p))
            p += 1
    out.extend(bad(k) for k in range(p, poison_count))
    return out


async def send(client: ServiceBusClient, queue: str, batch_of: Sequence[Any]) -> int:
    """Send the messages in as few batches as fit; how many were sent."""
    async with client, client.get_queue_sender(queue) as sender:
        batch = await sender.create_message_batch()
        for message in batch_of:
            try:
                batch.add_message(message)
            except ValueError:  # full: send it and start a new batch
                await sender.send_messages(batch)
                batch = await sender.create_message_batch()
                batch.add_message(message)
        if len(batch):
            await sender.send_messages(batch)
    return len(batch_of)
