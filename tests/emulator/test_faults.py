"""Fault injection for other tests: failing sends, dropped connections, early lock expiry — nothing is lost."""

from __future__ import annotations

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusError

from digest_sbemulator.server import EmulatorServer


def test_failed_sends_store_nothing_and_retries_succeed(connection_string: str, emulator: EmulatorServer) -> None:
    emulator.fail_next_sends(1)
    with ServiceBusClient.from_connection_string(connection_string, retry_total=0) as client, \
            client.get_queue_sender("orders") as sender:
        with pytest.raises(ServiceBusError):
            sender.send_messages(ServiceBusMessage("first"))
        sender.send_messages(ServiceBusMessage("second"))
    emulator.fail_next_sends(1)
    with ServiceBusClient.from_connection_string(connection_string, retry_total=3, retry_backoff_factor=0.05) \
            as client, client.get_queue_sender("orders") as sender:
        sender.send_messages(ServiceBusMessage("third"))  # the SDK retries once
    assert emulator.call(lambda: emulator.namespace.queue("orders").counts().active) == 2


def test_expired_lock_is_redelivered_and_settling_it_fails(connection_string: str, emulator: EmulatorServer) -> None:
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            sender.send_messages(ServiceBusMessage("m"))
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (message,) = receiver.receive_messages(max_wait_time=2)
            assert emulator.expire_locks("orders") == 1
            with pytest.raises(MessageLockLostError):
                receiver.complete_message(message)
            (again,) = receiver.receive_messages(max_wait_time=2)
            assert again.delivery_count == 1
            receiver.complete_message(again)


def test_dropped_connection_releases_locks(connection_string: str, emulator: EmulatorServer) -> None:
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            sender.send_messages(ServiceBusMessage("m"))
        receiver = client.get_queue_receiver("orders", max_wait_time=2)
        (held,) = receiver.receive_messages(max_wait_time=2)
        assert emulator.drop_connections() >= 1
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver("orders", max_wait_time=2) as second:
        (again,) = second.receive_messages(max_wait_time=2)
        assert again.sequence_number == held.sequence_number
        second.complete_message(again)
