"""Peeking walks every message exactly once, in sequence order, whatever order messages reached their sub-queue.

As on the service, a dead-lettered message keeps the sequence number it was given when it was sent, so a dead-letter
queue fills out of sequence order whenever messages fail at different times; deferred messages stay in the queue
with theirs. The SDK's peek cursor (and explicit `sequence_number=` paging) must still see each message once, past
the 250-per-peek cap. Real SDK, sync and aio.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient as AioServiceBusClient

from tests.support.sbemulator import running_emulator

QUEUE = "failing"
COUNT = 600
"""Above the 250-per-peek cap, so a walk takes three pages."""


def _order(kind: str, n: int) -> list[int]:
    """Positions 0..n-1 in the order they fail."""
    if kind == "reversed":
        return list(range(n))[::-1]
    if kind == "interleaved":  # every third one first, then the rest from the back: fails at different times
        return list(range(0, n, 3)) + [i for i in range(n - 1, -1, -1) if i % 3]
    order = list(range(n))
    random.Random(14).shuffle(order)
    return order


@pytest.fixture
def connection_string() -> Iterator[str]:
    with running_emulator([f"{QUEUE}:LockDuration=PT5M,MaxDeliveryCount=10"]) as server:
        yield server.connection_string()


def _receive_all(receiver: object, n: int) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    while len(got) < n:
        page = receiver.receive_messages(max_message_count=n - len(got), max_wait_time=2)  # type: ignore[attr-defined]
        assert page, f"only {len(got)} of {n} received"
        got += page
    return got


def _walk_with_cursor(receiver: object) -> list[int]:
    """The SDK's own cursor: each peek continues after the last message it returned."""
    seen: list[int] = []
    while page := receiver.peek_messages(max_message_count=250):  # type: ignore[attr-defined]
        assert len(page) <= 250
        seen += [(m.sequence_number or 0) for m in page]
    return seen


def _walk_from(receiver: object) -> list[int]:
    """Explicit paging: from the sequence number after the last one of the previous page."""
    seen: list[int] = []
    start = 1
    while page := receiver.peek_messages(max_message_count=250, sequence_number=start):  # type: ignore[attr-defined]
        seen += [(m.sequence_number or 0) for m in page]
        start = seen[-1] + 1
    return seen


@pytest.mark.parametrize("kind", ["reversed", "interleaved", "shuffled"])
def test_dead_letter_queue_filled_out_of_order_is_peeked_once_in_order(connection_string: str, kind: str) -> None:
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender(QUEUE) as sender:
            sender.send_messages([ServiceBusMessage(f"m{i}", message_id=f"m{i}") for i in range(COUNT)])
        with client.get_queue_receiver(QUEUE, max_wait_time=2) as receiver:
            received = _receive_all(receiver, COUNT)
            sent_as = {str(m.message_id): (m.sequence_number or 0) for m in received}
            for i in _order(kind, COUNT):
                receiver.dead_letter_message(received[i], reason="Permanent.Test", error_description=str(i))
        with client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            by_cursor = _walk_with_cursor(dlq)
        with client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            by_start = _walk_from(dlq)
            # a dead-lettered message keeps the sequence number it was sent with
            (first,) = dlq.peek_messages(max_message_count=1, sequence_number=sent_as["m7"])
            assert (first.message_id, (first.sequence_number or 0)) == ("m7", sent_as["m7"])
    everything = sorted(sent_as.values())
    assert by_cursor == everything
    assert by_start == everything


def test_deferred_messages_out_of_order_and_scheduled_ones_are_peeked_once(connection_string: str) -> None:
    import datetime

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender(QUEUE) as sender:
            sender.send_messages([ServiceBusMessage(f"d{i}") for i in range(COUNT)])
            scheduled = sender.schedule_messages([ServiceBusMessage(f"s{i}") for i in range(10)], later)
        with client.get_queue_receiver(QUEUE, max_wait_time=2) as receiver:
            received = _receive_all(receiver, COUNT)
            for i in _order("interleaved", COUNT):
                if i % 2:
                    receiver.defer_message(received[i])
            for i in range(0, COUNT, 2):
                receiver.complete_message(received[i])
        with client.get_queue_receiver(QUEUE) as browser:  # a receiver's cursor starts after what it received
            seen = _walk_with_cursor(browser)
    deferred = sorted((received[i].sequence_number or 0) for i in range(1, COUNT, 2))
    assert seen == sorted(deferred + list(scheduled))


@pytest.mark.parametrize("kind", ["reversed", "interleaved"])
async def test_aio_dead_letter_queue_filled_out_of_order_is_peeked_once(connection_string: str, kind: str) -> None:
    async with AioServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(QUEUE) as sender:
            await sender.send_messages([ServiceBusMessage(f"a{i}") for i in range(COUNT)])
        async with client.get_queue_receiver(QUEUE, max_wait_time=2) as receiver:
            received: list[ServiceBusReceivedMessage] = []
            while len(received) < COUNT:
                page = await receiver.receive_messages(max_message_count=COUNT - len(received), max_wait_time=2)
                assert page
                received += page
            for i in _order(kind, COUNT):
                await receiver.dead_letter_message(received[i], reason="Permanent.Test")
        async with client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            seen: list[int] = []
            while page := await dlq.peek_messages(max_message_count=250):
                seen += [(m.sequence_number or 0) for m in page]
    assert seen == sorted((m.sequence_number or 0) for m in received)
