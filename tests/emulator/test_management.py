"""Runtime counts the way users read them: the unmodified `ServiceBusAdministrationClient` over HTTPS on the
emulator's own port and connection string, trusting the emulator's CA."""

from __future__ import annotations

import datetime

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.management import QueueProperties, ServiceBusAdministrationClient

from digest_sbemulator.server import EmulatorServer


def _admin(emulator: EmulatorServer, connection_string: str | None = None) -> ServiceBusAdministrationClient:
    return ServiceBusAdministrationClient.from_connection_string(
        connection_string or emulator.connection_string(), connection_verify=str(emulator.tls.ca_file))


def test_runtime_counts_follow_active_dead_lettered_and_scheduled_messages(
        emulator: EmulatorServer, connection_string: str) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender("orders") as sender:
            sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(4)])
            sender.schedule_messages(ServiceBusMessage("later"), later)
        with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (first,) = receiver.receive_messages(max_message_count=1, max_wait_time=2)
            receiver.dead_letter_message(first, reason="Test", error_description="counted")
    with _admin(emulator) as admin:
        runtime = admin.get_queue_runtime_properties("orders")
        assert (runtime.active_message_count, runtime.dead_letter_message_count,
                runtime.scheduled_message_count, runtime.total_message_count) == (3, 1, 1, 5)
        assert (runtime.size_in_bytes or 0) > 0
        assert [q.name for q in admin.list_queues()] == ["dedupe", "expiring", "orders", "short-locks"]
        by_name = {q.name: q.active_message_count for q in admin.list_queues_runtime_properties()}
        assert by_name == {"dedupe": 0, "expiring": 0, "orders": 3, "short-locks": 0}


def test_queue_properties_are_the_configured_ones(emulator: EmulatorServer) -> None:
    with _admin(emulator) as admin:
        queue: QueueProperties = admin.get_queue("orders")
        dedupe: QueueProperties = admin.get_queue("dedupe")
    assert (queue.max_delivery_count, queue.lock_duration) == (3, datetime.timedelta(seconds=5))
    assert queue.requires_duplicate_detection is False
    assert dedupe.requires_duplicate_detection is True


def test_unknown_queue_wrong_key_and_writes_fail_clearly(emulator: EmulatorServer) -> None:
    with _admin(emulator) as admin, pytest.raises(ResourceNotFoundError, match="could not be found"):
        admin.get_queue_runtime_properties("nope")
    wrong = emulator.connection_string().replace(emulator.config.keys["RootManageSharedAccessKey"], "wrong")
    with _admin(emulator, wrong) as admin, pytest.raises(ClientAuthenticationError):
        admin.get_queue("orders")
    with _admin(emulator) as admin, pytest.raises(HttpResponseError, match="read-only"):
        admin.create_queue("new-queue")


def test_the_amqp_clients_are_unaffected_by_tls_on_the_same_port(emulator: EmulatorServer,
                                                                  connection_string: str) -> None:
    with _admin(emulator) as admin:
        assert admin.get_queue_runtime_properties("orders").active_message_count == 0
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender("orders") as sender:
        sender.send_messages(ServiceBusMessage("after https"))
    with _admin(emulator) as admin:
        assert admin.get_queue_runtime_properties("orders").active_message_count == 1
