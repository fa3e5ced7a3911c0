"""The broker core: delivery, settlement, delivery counts, dead-lettering, TTL, scheduling, deferral, duplicates."""

from __future__ import annotations

import datetime

import pytest

from digest_sbemulator.config import QueueProperties
from digest_sbemulator.queue import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    TTL_EXPIRED,
    LockLost,
    Message,
    NotDeferred,
    Queue,
    State,
)


def _queue(**props: object) -> Queue:
    defaults: dict[str, object] = {"LockDuration": "PT10S", "MaxDeliveryCount": 3}
    return Queue("q", QueueProperties.model_validate({**defaults, **props}))


def _msg(n: int = 0, **kw: object) -> Message:
    return Message(body=f"body-{n}".encode(), message_id=f"id-{n}", **kw)  # type: ignore[arg-type]


def _lock_one(queue: Queue, now: float, dead_letter: bool = False) -> tuple[Message, int]:
    ((message, token),) = queue.receive(now, 1, lock=True, dead_letter=dead_letter)
    assert token is not None
    return message, token


def test_sequence_numbers_and_fifo_delivery() -> None:
    queue = _queue()
    assert [queue.send(_msg(i), 1.0) for i in range(3)] == [1, 2, 3]
    received = queue.receive(2.0, 5, lock=True)
    assert [m.sequence_number for m, _ in received] == [1, 2, 3]
    assert all(m.enqueued_time == 1.0 for m, _ in received)
    assert queue.receive(2.0, 5, lock=True) == []


def test_first_delivery_has_delivery_count_zero_and_abandon_counts() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    message, token = _lock_one(queue, 1)
    assert message.delivery_count == 0
    queue.abandon(token, 2)
    message, token = _lock_one(queue, 3)
    assert message.delivery_count == 1


def test_reaching_max_delivery_count_dead_letters() -> None:
    queue = _queue(MaxDeliveryCount=3)
    queue.send(_msg(), 0)
    for attempt in range(3):
        message, token = _lock_one(queue, attempt + 1)
        assert message.delivery_count == attempt  # the last allowed delivery reads max - 1
        queue.abandon(token, attempt + 1.5)
    assert queue.receive(10, 1, lock=True) == []
    dead, _ = _lock_one(queue, 10, dead_letter=True)
    assert dead.application_properties["DeadLetterReason"] == MAX_DELIVERY_COUNT_EXCEEDED
    assert "3 delivery attempts" in dead.application_properties["DeadLetterErrorDescription"]
    assert queue.counts().dead_letter == 1
    assert queue.counts().active == 0


def test_lock_expiry_redelivers_with_a_new_token_and_counts() -> None:
    queue = _queue(LockDuration="PT10S")
    queue.send(_msg(), 0)
    _, first = _lock_one(queue, 0)
    assert queue.next_deadline() == 10
    message, second = _lock_one(queue, 10.5)
    assert second != first
    assert message.delivery_count == 1
    with pytest.raises(LockLost):
        queue.complete(first, 11)
    queue.complete(second, 11)
    assert queue.counts().total == 0


def test_renew_extends_the_lock() -> None:
    queue = _queue(LockDuration="PT10S")
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 0)
    assert queue.renew_lock(token, 8) == 18
    queue.tick(15)
    queue.complete(token, 15)
    with pytest.raises(LockLost):
        queue.renew_lock(token, 16)


def test_complete_twice_loses_the_lock() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 0)
    queue.complete(token, 1)
    with pytest.raises(LockLost):
        queue.complete(token, 1)


def test_release_does_not_count_a_delivery() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 0)
    queue.release(token, 1)
    message, _ = _lock_one(queue, 2)
    assert message.delivery_count == 0


def test_dead_letter_with_reason_and_description() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 0)
    queue.dead_letter_message(token, 1, "Permanent.InvalidMessage", "field conversation_id is required")
    dead = queue.peek(1, 10, dead_letter=True)
    assert [m.application_properties for m in dead] == [{
        "DeadLetterReason": "Permanent.InvalidMessage",
        "DeadLetterErrorDescription": "field conversation_id is required"}]
    assert dead[0].expires_at is None


def test_dead_letter_queue_messages_can_be_completed_and_abandoned() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 0)
    queue.dead_letter_message(token, 0, "r", "d")
    for i in range(5):  # no max-delivery-count on the DLQ
        _, dlq_token = _lock_one(queue, 1 + i, dead_letter=True)
        queue.abandon(dlq_token, 1 + i, dead_letter=True)
    _, dlq_token = _lock_one(queue, 10, dead_letter=True)
    queue.complete(dlq_token, 10, dead_letter=True)
    assert queue.counts().dead_letter == 0


def test_receive_and_delete_removes_at_once() -> None:
    queue = _queue()
    queue.send(_msg(), 0)
    ((message, token),) = queue.receive(0, 1, lock=False)
    assert token is None
    assert message.sequence_number == 1
    assert queue.counts().total == 0


def test_ttl_expiry_drops_or_dead_letters() -> None:
    dropping = _queue(DefaultMessageTimeToLive="PT60S")
    dropping.send(_msg(1), 0)
    dropping.send(_msg(2, time_to_live=5.0), 0)
    assert dropping.next_deadline() == 5
    assert [m.sequence_number for m, _ in dropping.receive(6, 5, lock=True)] == [1]
    assert dropping.counts().dead_letter == 0

    dead_lettering = _queue(DefaultMessageTimeToLive="PT60S", DeadLetteringOnMessageExpiration=True)
    dead_lettering.send(_msg(1, time_to_live=5.0), 0)
    assert dead_lettering.receive(6, 5, lock=True) == []
    (dead,) = dead_lettering.peek(1, 5, dead_letter=True)
    assert dead.application_properties["DeadLetterReason"] == TTL_EXPIRED
    dead_lettering.tick(10_000)  # a dead-lettered message no longer expires
    assert dead_lettering.counts().dead_letter == 1


def test_ttl_above_the_queue_default_is_capped() -> None:
    queue = _queue(DefaultMessageTimeToLive="PT60S")
    queue.send(_msg(time_to_live=3600.0), 0)
    assert queue.main.messages[1].expires_at == 60


def test_a_locked_message_expires_after_its_lock() -> None:
    queue = _queue(DefaultMessageTimeToLive="PT5S", LockDuration="PT30S")
    queue.send(_msg(), 0)
    _, token = _lock_one(queue, 1)
    queue.tick(6)
    queue.complete(token, 6)  # still completable while locked
    assert queue.counts().total == 0


def test_scheduled_messages_appear_on_time_and_can_be_cancelled() -> None:
    queue = _queue()
    first = queue.schedule(_msg(1), 100, now=0)
    second = queue.schedule(_msg(2), 200, now=0)
    assert queue.counts().scheduled == 2
    assert queue.peek(1, 10)[0].state is State.SCHEDULED
    assert queue.receive(50, 5, lock=True) == []
    assert queue.next_deadline() == 100
    queue.cancel_scheduled([second])
    got = queue.receive(100, 5, lock=True)
    assert [m.sequence_number for m, _ in got] == [first]
    assert got[0][0].enqueued_time == 100
    assert queue.counts().scheduled == 0


def test_deferred_messages_are_received_by_sequence_number_only() -> None:
    queue = _queue(DefaultMessageTimeToLive="PT10S")
    queue.send(_msg(), 0)
    message, token = _lock_one(queue, 0)
    queue.defer(token, 1)
    assert queue.counts().deferred == 1
    assert queue.receive(2, 5, lock=True) == []
    queue.tick(100)  # deferred messages do not expire away
    ((again, new_token),) = queue.receive_deferred([message.sequence_number], 100, lock=True)
    assert again.state is State.DEFERRED
    assert new_token is not None
    queue.complete(new_token, 100)
    assert queue.counts().total == 0
    with pytest.raises(NotDeferred):
        queue.receive_deferred([message.sequence_number], 100, lock=True)


def test_duplicate_detection_drops_silently_within_the_window() -> None:
    queue = _queue(RequiresDuplicateDetection=True, DuplicateDetectionHistoryTimeWindow="PT20S")
    assert queue.send(_msg(1), 0) == 1
    assert queue.send(_msg(1), 10) is None
    assert queue.send(_msg(2), 10) == 2
    assert queue.send(_msg(1), 25) == 3  # outside the window
    assert queue.counts().active == 3


def test_duplicates_are_kept_without_detection() -> None:
    queue = _queue()
    assert [queue.send(_msg(1), 0), queue.send(_msg(1), 0)] == [1, 2]


def test_peek_walks_pages_without_touching_delivery_counts() -> None:
    queue = _queue()
    for i in range(7):
        queue.send(_msg(i), 0)
    _, token = _lock_one(queue, 0)
    pages, start = [], 1
    while page := queue.peek(start, 3):
        pages.append([m.sequence_number for m in page])
        start = page[-1].sequence_number + 1
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    queue.abandon(token, 1)
    assert all(m.delivery_count == (1 if m.sequence_number == 1 else 0) for m in queue.peek(1, 10))


def test_no_scan_per_delivery() -> None:
    """Deliveries pop from an index: a long queue with a locked head still delivers the next message."""
    queue = _queue()
    for i in range(10_000):
        queue.send(_msg(i), 0)
    locked = queue.receive(0, 5_000, lock=True)
    assert len(locked) == 5_000
    assert queue.main.available_count == 5_000
    (message, _), = queue.receive(0, 1, lock=True)
    assert message.sequence_number == 5_001


def test_properties_durations_come_from_config() -> None:
    queue = _queue(LockDuration="PT2S")
    assert queue.main.lock_duration == datetime.timedelta(seconds=2).total_seconds()


def test_bookkeeping_stays_bounded_by_what_is_held_not_by_throughput() -> None:
    queue = _queue(DefaultMessageTimeToLive="PT1H", LockDuration="PT1M")
    for i in range(20_000):
        queue.send(_msg(i), 0)
        ((_, token),) = queue.receive(0, 1, lock=True)
        assert token is not None
        queue.complete(token, 0)
    assert queue.counts().total == 0
    assert len(queue._expiry) <= 1024 + 2
    assert len(queue.main._lock_expiry) <= 1024 + 2


def test_duplicate_detection_applies_to_scheduled_messages_too() -> None:
    queue = _queue(RequiresDuplicateDetection=True)
    queue.send(_msg(1), 0)
    dropped = queue.schedule(_msg(1), 100, 0)  # the same id, scheduled: dropped like a resend
    assert queue.counts().scheduled == 0
    assert queue.peek(dropped, 1) == []
    queue.schedule(_msg(2), 100, 0)
    queue.send(_msg(2), 1)  # and a send after a scheduled one with that id
    assert (queue.counts().scheduled, queue.counts().active) == (1, 1)
