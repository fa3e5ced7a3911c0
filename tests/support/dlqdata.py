"""Varied messages for dead-letter tests: all three body types, session ids, large and bytes-keyed properties,
and helpers to dead-letter them through the real SDK and to take inventory by message id and body hash."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender, ServiceBusSubQueue
from azure.servicebus.amqp import AmqpAnnotatedMessage

from digest_dlq.bus import from_received

REASONS = ["Transient.Exhausted.Http", "Transient.Exhausted.Teams", "MaxDeliveryCountExceeded", "Poison.BadJson",
           "TTLExpiredException"]


@dataclass(frozen=True)
class Sent:
    message_id: str
    body_hash: str
    reason: str


def varied(count: int, seed: int = 5, *, big_every: int = 0, prefix: str = "m") -> list[tuple[Any, Sent]]:
    """`count` messages cycling through body types, sessions, property shapes and reasons."""
    rng = random.Random(seed)
    out: list[tuple[Any, Sent]] = []
    for i in range(count):
        mid = f"{prefix}-{i:05d}"
        reason = REASONS[i % len(REASONS)]
        app: dict[Any, Any] = {"tenant": f"t{i % 7}", "n": i, "flag": i % 2 == 0}
        if i % 11 == 0:
            app["big"] = "x" * 8000  # large property
        if i % 13 == 0:
            app[b"bytes-key"] = b"bytes-value"  # bytes keys and values, as a naive producer might send
        kind = i % 3
        size = 200 + rng.randrange(2000)
        if big_every and i % big_every == 0:
            size = 40_000
        message: Any
        if kind == 0:
            payload = json.dumps({"i": i, "pad": "p" * size}).encode()
            message = ServiceBusMessage(payload, message_id=mid, application_properties=app,
                                        content_type="application/json", subject=f"digest.{i % 4}",
                                        correlation_id=f"c-{i}", session_id=f"s{i % 3}" if i % 5 == 0 else None)
            body_hash = _hash("data", payload)
        elif kind == 1:
            seq = [[i, f"s{i}", "q" * (size // 4)], [True, 1.5]]
            message = AmqpAnnotatedMessage(
                sequence_body=seq, properties={"message_id": mid, "subject": "seq", "group_id": f"g{i % 2}"},
                application_properties=app)
            body_hash = None  # computed from the received form
        else:
            value = {"i": i, "text": "v" * (size // 2), "nested": [1, 2, {"k": "v"}]}
            message = AmqpAnnotatedMessage(value_body=value, properties={"message_id": mid},
                                           application_properties=app)
            body_hash = None
        out.append((message, Sent(mid, body_hash or "", reason)))
    return out


def _hash(body_type: str, raw: bytes) -> str:
    return hashlib.sha256(body_type.encode() + b"\0" + raw).hexdigest()


def dead_letter_all(connection_string: str, queue: str, items: list[tuple[Any, Sent]], *,
                    order: Literal["received", "reversed", "interleaved"] = "received") -> dict[str, str]:
    """Send `items`, receive each and dead-letter it with its reason; returns message id → body hash as received.

    `reversed` and `interleaved` receive everything first (holding the locks), then dead-letter out of sequence
    order, as messages that fail at different times do: the dead-letter queue then fills out of order."""
    by_id = {sent.message_id: sent for _, sent in items}
    hashes: dict[str, str] = {}
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender(queue) as sender:
            send_in_batches(sender, (message for message, _ in items))
        with client.get_queue_receiver(queue, prefetch_count=0) as receiver:
            held: list[Any] = []

            def dead_letter(received: Any) -> None:
                sent = by_id[str(received.message_id)]
                receiver.dead_letter_message(received, reason=sent.reason,
                                             error_description=f"{sent.reason}: attempt failed\nstack line")

            while len(hashes) < len(items):
                got = receiver.receive_messages(max_message_count=100, max_wait_time=5)
                assert got, f"only {len(hashes)} of {len(items)} messages arrived"
                for received in got:
                    hashes[str(received.message_id)] = from_received(received).body_hash()
                    if order == "received":
                        dead_letter(received)
                    else:
                        held.append(received)
            if order == "reversed":
                held.reverse()
            elif order == "interleaved":
                held = held[::3] + [m for i, m in enumerate(held) if i % 3][::-1]
            for received in held:
                dead_letter(received)
    return hashes


def inventory(connection_string: str, queue: str, *, dead_letter: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(original message id, body hash, application properties) of everything in the queue or its DLQ (peek)."""
    with ServiceBusClient.from_connection_string(connection_string) as client:
        return peek_inventory(client, queue, dead_letter=dead_letter)


def peek_inventory(client: ServiceBusClient, queue: str, *, dead_letter: bool) \
        -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    kwargs: dict[str, Any] = {"sub_queue": ServiceBusSubQueue.DEAD_LETTER} if dead_letter else {}
    with client.get_queue_receiver(queue, **kwargs) as receiver:
        seq = 1
        while True:
            page = receiver.peek_messages(max_message_count=250, sequence_number=seq)
            if not page:
                break
            for received in page:
                message = from_received(received)
                out.append((str(message.original_message_id), message.body_hash(), message.application_properties))
            seq = int(page[-1].sequence_number or 0) + 1
    return out


def assert_conserved(expected: dict[str, str], places: dict[str, list[tuple[str, str, dict[str, Any]]]]) -> None:
    """Each original id appears exactly once over all places, with its body hash unchanged."""
    seen: Counter[str] = Counter()
    for place, items in places.items():
        for mid, body_hash, _ in items:
            seen[mid] += 1
            assert expected.get(mid) == body_hash, f"{mid} in {place}: body changed or unknown message"
    missing = sorted(set(expected) - set(seen))
    duplicated = sorted(m for m, n in seen.items() if n > 1)
    assert not missing, f"lost: {missing[:10]} ({len(missing)})"
    assert not duplicated, f"duplicated: {duplicated[:10]} ({len(duplicated)})"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def send_in_batches(sender: ServiceBusSender, messages: Iterable[ServiceBusMessage]) -> None:
    """Send `messages` in as few `ServiceBusMessageBatch`es as their sizes allow."""
    batch = sender.create_message_batch()
    for message in messages:
        try:
            batch.add_message(message)
        except ValueError:  # the batch is full
            sender.send_messages(batch)
            batch = sender.create_message_batch()
            batch.add_message(message)
    sender.send_messages(batch)
