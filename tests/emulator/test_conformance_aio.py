"""The SDK's asyncio client against the emulator."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.amqp import AmqpAnnotatedMessage
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusAuthenticationError, ServiceBusError

from digest_sbemulator.server import EmulatorServer
from tests.support.sbemulator import BODIES, amqp_body


async def test_aio_send_receive_settle(connection_string: str, emulator: EmulatorServer) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("orders") as sender:
            batch = await sender.create_message_batch()
            for i in range(3):
                batch.add_message(ServiceBusMessage(f"a{i}"))
            await sender.send_messages(batch)
        async with client.get_queue_receiver("orders", max_wait_time=2, prefetch_count=5) as receiver:
            got: list[ServiceBusReceivedMessage] = []
            while len(got) < 3:
                got += await receiver.receive_messages(max_message_count=3, max_wait_time=2)
            first, second, third = got
            await receiver.complete_message(first)
            await receiver.abandon_message(second)
            await receiver.dead_letter_message(third, reason="Permanent.Test", error_description="aio")
            (again,) = await receiver.receive_messages(max_wait_time=2)
            assert (str(again), again.delivery_count) == ("a1", 1)
            await receiver.complete_message(again)
        async with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                             max_wait_time=2) as dlq:
            (dead,) = await dlq.receive_messages(max_wait_time=2)
            assert (str(dead), dead.dead_letter_reason, dead.dead_letter_error_description) == (
                "a2", "Permanent.Test", "aio")
            await dlq.complete_message(dead)
    assert emulator.call(lambda: emulator.namespace.queue("orders").counts().total) == 0


async def test_aio_receive_and_delete_peek_paging_and_dead_letter_peek(connection_string: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("orders") as sender:
            await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(5)])
        async with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            seen = [m.sequence_number for m in await receiver.peek_messages(max_message_count=2)]
            seen += [m.sequence_number for m in await receiver.peek_messages(max_message_count=2)]
            seen += [m.sequence_number for m in await receiver.peek_messages(max_message_count=2)]
            assert seen == [1, 2, 3, 4, 5]
            (first,) = await receiver.receive_messages(max_message_count=1, max_wait_time=2)
            await receiver.dead_letter_message(first, reason="Peeked", error_description="from the DLQ")
        async with client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                             max_wait_time=2) as dlq:
            (peeked,) = await dlq.peek_messages(max_message_count=5)
            assert (peeked.dead_letter_reason, peeked.delivery_count) == ("Peeked", 0)
        async with client.get_queue_receiver("orders", max_wait_time=2,
                                             receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got: list[ServiceBusReceivedMessage] = []
            while len(got) < 4:
                got += await receiver.receive_messages(max_message_count=4 - len(got), max_wait_time=2)
            assert [str(m) for m in got] == ["m1", "m2", "m3", "m4"]
            assert await receiver.peek_messages(max_message_count=5) == []


async def test_aio_defer_schedule_and_cancel(connection_string: str) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("orders") as sender:
            await sender.send_messages(ServiceBusMessage("defer me"))
            kept, cancelled = await sender.schedule_messages([ServiceBusMessage("kept"), ServiceBusMessage("gone")],
                                                             later)
            await sender.cancel_scheduled_messages(cancelled)
        async with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (message,) = await receiver.receive_messages(max_wait_time=2)
            await receiver.defer_message(message)
            assert message.sequence_number is not None
            (deferred,) = await receiver.receive_deferred_messages([message.sequence_number])
            assert str(deferred) == "defer me"
            await receiver.complete_message(deferred)
            peeked = await receiver.peek_messages(max_message_count=5)
            assert [(m.sequence_number, m.state) for m in peeked] == [(kept, ServiceBusMessageState.SCHEDULED)]


async def test_aio_lock_renewal_expiry_and_lock_lost(connection_string: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("short-locks") as sender:
            await sender.send_messages(ServiceBusMessage("slow"))
        async with client.get_queue_receiver("short-locks", max_wait_time=2) as receiver:
            (message,) = await receiver.receive_messages(max_wait_time=2)
            before = message.locked_until_utc
            await asyncio.sleep(0.5)
            await receiver.renew_message_lock(message)
            assert message.locked_until_utc is not None
            assert before is not None
            assert message.locked_until_utc > before
            await asyncio.sleep(1.3)
            (again,) = await receiver.receive_messages(max_wait_time=3)
            assert again.delivery_count == 1
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(message)
            await receiver.complete_message(again)


async def test_aio_wrong_key_and_unknown_entities_fail_clearly(emulator: EmulatorServer) -> None:
    wrong = emulator.connection_string().replace("SAS_KEY_VALUE", "WRONG")
    with pytest.raises(ServiceBusAuthenticationError):
        async with ServiceBusClient.from_connection_string(wrong, retry_total=0) as client, \
                client.get_queue_sender("orders") as sender:
            await sender.send_messages(ServiceBusMessage("x"))
    with pytest.raises(ServiceBusError, match="could not be found"):
        async with ServiceBusClient.from_connection_string(emulator.connection_string(), retry_total=0) as client, \
                client.get_queue_sender("missing") as sender:
            await sender.send_messages(ServiceBusMessage("x"))


@pytest.mark.parametrize("body", BODIES)
async def test_aio_every_body_type_round_trips(connection_string: str, body: dict[str, Any]) -> None:
    sent = AmqpAnnotatedMessage(**body, properties={"message_id": "typed"})
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender("orders") as sender:
            await sender.send_messages(sent)
        async with client.get_queue_receiver("orders", max_wait_time=2) as receiver:
            (got,) = await receiver.receive_messages(max_wait_time=2)
            raw = got.raw_amqp_message
            assert raw.body_type == sent.body_type
            assert amqp_body(raw) == amqp_body(sent)
            assert got.message_id == "typed"
            await receiver.complete_message(got)


async def test_aio_admin_client_reads_runtime_counts(emulator: EmulatorServer, connection_string: str) -> None:
    async with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender("orders") as sender:
        await sender.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
    async with ServiceBusAdministrationClient.from_connection_string(
            connection_string, connection_verify=str(emulator.tls.ca_file)) as admin:
        runtime = await admin.get_queue_runtime_properties("orders")
    assert (runtime.active_message_count, runtime.dead_letter_message_count) == (2, 0)
