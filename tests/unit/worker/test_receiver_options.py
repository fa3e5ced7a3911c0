"""The receiver the consumer asks the SDK for: the options must reach the SDK's handler configuration (the SDK takes
any keyword and silently ignores the ones it does not know, so a misspelt option would pass unnoticed)."""

from __future__ import annotations

from azure.servicebus.aio import ServiceBusClient

from digest_api import contract
from digest_worker.config import load
from digest_worker.consumer import RECEIVER_SOCKET_TIMEOUT_SECONDS, receiver_options

CS = "Endpoint=sb://127.0.0.1:5672/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=k"


async def test_socket_timeout_and_prefetch_reach_the_sdk_receiver() -> None:
    cfg = load({contract.SERVICEBUS_QUEUE: "digests", contract.SERVICEBUS_CONNECTION_STRING: CS,
                contract.PREFETCH: "5"})
    client = ServiceBusClient.from_connection_string(CS)
    receiver = client.get_queue_receiver(cfg.queue, **receiver_options(cfg))  # nothing is opened yet
    try:
        assert receiver._config.socket_timeout == RECEIVER_SOCKET_TIMEOUT_SECONDS < 0.2  # the SDK's default: 0.2 s
        assert receiver._prefetch_count == 5
    finally:
        await receiver.close()
        await client.close()
