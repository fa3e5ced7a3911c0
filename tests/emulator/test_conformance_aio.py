"""The SDK's asyncio client against the emulator."""

from __future__ import annotations

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from digest_sbemulator.server import EmulatorServer


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
