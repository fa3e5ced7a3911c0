"""The unmodified azure-servicebus SDK against the emulator over AMQP (sync client)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.amqp import AmqpAnnotatedMessage
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusAuthenticationError, ServiceBusError

from digest_sbemulator.server import EmulatorServer
from tests.support.sbemulator import BODIES, amqp_body, granted_credit, locked_messages


def _send(connection_string: str, queue: str, *messages: ServiceBusMessage) -> None:
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender(queue) as sender:
        sender.send_messages(list(messages))


def test_send_receive_complete(connection_string: str, emulator: EmulatorServer) -> None:
    _send(connection_string, "orders", ServiceBusMessage("hello", message_id="m1", subject="greeting",
                                                         application_properties={"k": "v"}))
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as receiver:
        (message,) = receiver.receive_messages(max_message_count=5, max_wait_time=2)
        assert (str(message), message.message_id, message.subject) == ("hello", "m1", "greeting")
        assert message.application_properties == {b"k": b"v"}
        assert message.delivery_count == 0  # the AMQP convention: no failed delivery before this one
        assert message.sequence_number == 1
        assert message.enqueued_time_utc is not None
        assert message.locked_until_utc is not None
        receiver.complete_message(message)
    assert emulator.call(lambda: emulator.namespace.queue("orders").counts().total) == 0


def test_batches_and_lists_become_separate_messages(connection_string: str) -> None:
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            batch = sender.create_message_batch()
            for i in range(10):
                batch.add_message(ServiceBusMessage(f"b{i}"))
            sender.send_messages(batch)
            sender.send_messages([ServiceBusMessage("l0"), ServiceBusMessage("l1")])
        with client.get_queue_receiver("orders", max_wait_time=2,
                                       receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got: list[str] = []
            while len(got) < 12:
                batch_got = receiver.receive_messages(max_message_count=20, max_wait_time=2)
                assert batch_got
                got += [str(m) for m in batch_got]
    assert got == [f"b{i}" for i in range(10)] + ["l0", "l1"]


def test_a_single_message_whose_body_is_an_encoded_message_stays_one_message(connection_string: str) -> None:
    """Batches are told apart by the transfer's message-format, never by the shape of the body."""
    inner = bytearray()
    encode_payload(inner, PyamqpTransport.to_outgoing_amqp_message(ServiceBusMessage("inner").raw_amqp_message))
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            sender.send_messages(ServiceBusMessage(bytes(inner), message_id="outer"))
        with client.get_queue_receiver("orders", max_wait_time=2,
                                       receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = receiver.receive_messages(max_message_count=5, max_wait_time=2)
    assert [(m.message_id, b"".join(m.body)) for m in got] == [("outer", bytes(inner))]


def test_abandon_counts_and_max_delivery_count_dead_letters(connection_string: str) -> None:
    _send(connection_string, "orders", ServiceBusMessage("poison"))
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            for attempt in range(3):
                (message,) = receiver.receive_messages(max_wait_time=2)
                assert message.delivery_count == attempt
                receiver.abandon_message(message)
            assert receiver.receive_messages(max_wait_time=1) == []
        with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                       max_wait_time=2) as dlq:
            (dead,) = dlq.receive_messages(max_wait_time=2)
            assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert str(dead) == "poison"
            dlq.complete_message(dead)


def test_dead_letter_with_reason_and_description(connection_string: str) -> None:
    _send(connection_string, "orders", ServiceBusMessage("bad"))
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (message,) = receiver.receive_messages(max_wait_time=2)
            receiver.dead_letter_message(message, reason="Permanent.InvalidMessage",
                                         error_description="conversation_id is required")
        with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                       max_wait_time=2) as dlq:
            (dead,) = dlq.receive_messages(max_wait_time=2)
            assert (dead.dead_letter_reason, dead.dead_letter_error_description) == (
                "Permanent.InvalidMessage", "conversation_id is required")
            # as the service: DeadLetterSource is only set on messages auto-forwarded out of a dead-letter queue
            # (learn.microsoft.com: ServiceBusReceivedMessage.DeadLetterSource, Remarks), not on the DLQ itself
            assert dead.dead_letter_source is None


def test_peek_walks_the_queue_without_changing_delivery_counts(connection_string: str) -> None:
    _send(connection_string, "orders", *[ServiceBusMessage(f"m{i}") for i in range(7)])
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as receiver:
        seen = [m.sequence_number for m in receiver.peek_messages(max_message_count=3)]
        seen += [m.sequence_number for m in receiver.peek_messages(max_message_count=3)]
        seen += [m.sequence_number for m in receiver.peek_messages(max_message_count=3)]
        assert seen == [1, 2, 3, 4, 5, 6, 7]
        assert receiver.peek_messages(max_message_count=3) == []
        (first, *_) = receiver.receive_messages(max_message_count=7, max_wait_time=2)
        assert first.delivery_count == 0


def test_lock_renewal_and_expiry(connection_string: str) -> None:
    _send(connection_string, "short-locks", ServiceBusMessage("slow"))
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("short-locks", max_wait_time=2) as receiver:
        (message,) = receiver.receive_messages(max_wait_time=2)
        before = message.locked_until_utc
        time.sleep(0.5)
        receiver.renew_message_lock(message)
        assert message.locked_until_utc is not None
        assert before is not None
        assert message.locked_until_utc > before
        time.sleep(1.3)
        (again,) = receiver.receive_messages(max_wait_time=3)  # the lock expired: redelivered
        assert again.delivery_count == 1
        with pytest.raises(MessageLockLostError):
            receiver.complete_message(message)
        receiver.complete_message(again)


def test_wrong_key_is_refused(emulator: EmulatorServer) -> None:
    wrong = emulator.connection_string().replace("SAS_KEY_VALUE", "WRONG")
    with pytest.raises(ServiceBusAuthenticationError), \
            ServiceBusClient.from_connection_string(wrong, retry_total=0) as client, \
            client.get_queue_sender("orders") as sender:
        sender.send_messages(ServiceBusMessage("x"))


def test_unknown_entities_fail_instead_of_hanging(connection_string: str) -> None:
    """The link is detached with amqp:not-found; before the fix the SDK waited forever (pytest-timeout guards)."""
    with pytest.raises(ServiceBusError), \
            ServiceBusClient.from_connection_string(connection_string, retry_total=0) as client, \
            client.get_queue_sender("absent") as sender:
        sender.send_messages(ServiceBusMessage("x"))
    with pytest.raises(ServiceBusError), \
            ServiceBusClient.from_connection_string(connection_string, retry_total=0) as client, \
            client.get_queue_receiver("absent", max_wait_time=1) as receiver:
        receiver.receive_messages(max_wait_time=1)


def test_session_receivers_are_refused_clearly(connection_string: str) -> None:
    with ServiceBusClient.from_connection_string(connection_string, retry_total=0) as client, \
            pytest.raises(ServiceBusError, match="sessions are not supported"), \
            client.get_queue_receiver("orders", session_id="s1", max_wait_time=1) as receiver:
        receiver.receive_messages(max_wait_time=1)


def test_duplicate_detection_drops_a_resent_id(connection_string: str, emulator: EmulatorServer) -> None:
    _send(connection_string, "dedupe", ServiceBusMessage("a", message_id="same"),
          ServiceBusMessage("b", message_id="same"), ServiceBusMessage("c", message_id="other"))
    assert emulator.call(lambda: emulator.namespace.queue("dedupe").counts().active) == 2


def test_defer_then_receive_by_sequence_number_and_settle(connection_string: str, emulator: EmulatorServer) -> None:
    _send(connection_string, "orders", ServiceBusMessage("later"))
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as receiver:
        (message,) = receiver.receive_messages(max_wait_time=2)
        receiver.defer_message(message)
        assert receiver.receive_messages(max_wait_time=1) == []
        assert message.sequence_number is not None
        (deferred,) = receiver.receive_deferred_messages([message.sequence_number])
        assert str(deferred) == "later"
        receiver.complete_message(deferred)
    assert emulator.call(lambda: emulator.namespace.queue("orders").counts().total) == 0


def test_scheduled_messages_and_cancellation(connection_string: str) -> None:
    """Activation on time is covered by the broker-core tests (driven by a clock); here: the wire shapes."""
    import datetime

    from azure.servicebus import ServiceBusMessageState

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            kept, cancelled = sender.schedule_messages([ServiceBusMessage("kept"), ServiceBusMessage("gone")], later)
            sender.cancel_scheduled_messages(cancelled)
        with client.get_queue_receiver("orders", max_wait_time=1) as receiver:
            (peeked,) = receiver.peek_messages(max_message_count=5)
            assert peeked.sequence_number == kept
            assert peeked.state == ServiceBusMessageState.SCHEDULED
            assert receiver.receive_messages(max_wait_time=0.5) == []


def test_expired_messages_are_dead_lettered_and_never_delivered(connection_string: str) -> None:
    _send(connection_string, "expiring", ServiceBusMessage("stale"))
    time.sleep(1.2)  # the queue's DefaultMessageTimeToLive is 1 s
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_receiver("expiring", max_wait_time=1) as receiver:
            assert receiver.receive_messages(max_wait_time=1) == []
        with client.get_queue_receiver("expiring", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                       max_wait_time=2) as dlq:
            (dead,) = dlq.receive_messages(max_wait_time=2)
            assert (str(dead), dead.dead_letter_reason) == ("stale", "TTLExpiredException")


def test_properties_round_trip_over_the_wire(connection_string: str) -> None:
    import datetime

    sent = ServiceBusMessage(
        b"\x00\x01binary", message_id="id-1", correlation_id="corr", session_id=None, reply_to="replies", to="dest",
        subject="subj", content_type="application/octet-stream", time_to_live=datetime.timedelta(minutes=5),
        partition_key="pk", application_properties={"s": "v", "n": 7, "f": 1.5, "b": True},
    )
    _send(connection_string, "orders", sent)
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as receiver:
        (got,) = receiver.receive_messages(max_wait_time=2)
        assert b"".join(got.body) == b"\x00\x01binary"
        assert (got.message_id, got.correlation_id, got.reply_to, got.to, got.subject, got.content_type) == (
            "id-1", "corr", "replies", "dest", "subj", "application/octet-stream")
        assert got.partition_key == "pk"
        assert got.time_to_live == datetime.timedelta(minutes=5)
        assert got.application_properties == {b"s": b"v", b"n": 7, b"f": 1.5, b"b": True}
        receiver.complete_message(got)


def test_closing_a_receiver_releases_its_locks(connection_string: str) -> None:
    _send(connection_string, "orders", ServiceBusMessage("held"))
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (held,) = receiver.receive_messages(max_wait_time=2)
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (again,) = receiver.receive_messages(max_wait_time=2)  # well before the 5 s lock would expire
            assert again.sequence_number == held.sequence_number
            assert again.delivery_count == 0  # released, not a failed delivery
            receiver.complete_message(again)


def test_insecure_mode_accepts_any_key() -> None:
    from digest_sbemulator.config import build_config
    from tests.support.kubeconfig import free_port

    server = EmulatorServer(build_config(queue_flags=["q"], insecure=True), port=free_port()).start()
    try:
        wrong = server.connection_string().replace("SAS_KEY_VALUE", "anything")
        _send(wrong, "q", ServiceBusMessage("ok"))
        assert server.call(lambda: server.namespace.queue("q").counts().active) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("prefetch", [0, 20])
def test_max_message_count_and_prefetch_are_honoured(connection_string: str, emulator: EmulatorServer,
                                                     prefetch: int) -> None:
    _send(connection_string, "orders", *[ServiceBusMessage(f"m{i}") for i in range(10)])
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2, prefetch_count=prefetch) as receiver:
        first = receiver.receive_messages(max_message_count=4, max_wait_time=2)
        assert len(first) == 4
        # what the receiver asked the broker for, seen at the broker: without prefetch, credit for the 4 asked
        # and nothing more locked, even a while later; with prefetch 20, credit for at least 20, so all 10 are
        # locked at once (the 6 not handed out wait in the SDK's buffer)
        time.sleep(0.3)
        if prefetch == 0:
            assert (granted_credit(emulator, "orders"), locked_messages(emulator, "orders")) == ([4], 4)
        else:
            (credit,) = granted_credit(emulator, "orders")
            assert credit >= prefetch and locked_messages(emulator, "orders") == 10
        rest: list[str] = []
        while len(first) + len(rest) < 10:
            got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
            assert got
            rest += [str(m) for m in got]
            for message in got:
                receiver.complete_message(message)
        for message in first:
            receiver.complete_message(message)
        assert sorted([str(m) for m in first] + rest) == sorted(f"m{i}" for i in range(10))


@pytest.mark.parametrize("body", [*BODIES, {"value_body": {b"binary-key": 1, "k": [b"\x00"]}}])
def test_every_body_type_round_trips(connection_string: str, body: dict[str, Any]) -> None:
    sent = AmqpAnnotatedMessage(**body, properties={"message_id": "typed"})
    _send(connection_string, "orders", sent)  # type: ignore[arg-type]  # the SDK accepts annotated messages
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as receiver:
        (got,) = receiver.receive_messages(max_wait_time=2)
        assert got.raw_amqp_message.body_type == sent.body_type
        assert amqp_body(got.raw_amqp_message) == amqp_body(sent)
        receiver.complete_message(got)
