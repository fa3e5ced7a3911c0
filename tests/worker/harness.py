"""The worker under test with real parts: the emulator, a local Bot Connector and token endpoint, a real database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from digest_api import contract
from digest_sbemulator.server import EmulatorServer
from digest_worker.app import WorkerApp
from digest_worker.card import DigestItem
from digest_worker.config import async_database_url, load
from digest_worker.db.store import Store, StoredReference
from tests.worker.fakes import FakeConnector, FakeTokenEndpoint

APP_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "correct-horse"
CONVERSATIONS = ("19:general@thread.tacv2", "19:team-b@thread.tacv2", "19:gone@thread.tacv2")
QUEUES = [
    "digests:MaxDeliveryCount=3,LockDuration=PT5S",
    "retries:MaxDeliveryCount=2,LockDuration=PT5S",
    "slow:MaxDeliveryCount=3,LockDuration=PT4S",
]


async def wait_until(predicate: Callable[[], Any], within: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


def request(request_id: str, conversation_id: str = CONVERSATIONS[0], **fields: Any) -> ServiceBusMessage:
    body = {"request_id": request_id, "conversation_id": conversation_id, "date_range_days": 7, "max_items": 5,
            **fields}
    return ServiceBusMessage(json.dumps(body), message_id=request_id, content_type="application/json",
                             correlation_id=f"corr-{request_id}")


@dataclass
class Stack:
    emulator: EmulatorServer
    connector: FakeConnector
    tokens: FakeTokenEndpoint
    database_url: str

    def env(self, queue: str = "digests", **overrides: str) -> dict[str, str]:
        env = {
            contract.SERVICEBUS_CONNECTION_STRING: self.emulator.connection_string(),
            contract.SERVICEBUS_QUEUE: queue,
            contract.MAX_DELIVERY_COUNT: {"digests": "3", "retries": "2", "slow": "3"}.get(queue, "3"),
            contract.CONCURRENCY: "4",
            contract.METRICS_PORT: "0",
            contract.DRAIN_SECONDS: "10",
            contract.TEAMS_APP_ID: APP_ID,
            contract.TEAMS_APP_TYPE: "MultiTenant",
            contract.TEAMS_APP_PASSWORD: SECRET,
            contract.TEAMS_LOGIN_URL: self.tokens.login_url,
            contract.TEAMS_OAUTH_SCOPE: "https://api.botframework.com",
            contract.TEAMS_TIMEOUT_SECONDS: "2",
            contract.TEAMS_SERVICE_URLS: self.connector.url,  # the local connector (http, loopback) explicitly
            contract.DATABASE_URL: self.database_url,
            contract.SYSTEMIC_BACKOFF_SECONDS: "0.2",
            contract.RECONNECT_BACKOFF_SECONDS: "0.1",
        }
        env.update(overrides)
        return env

    @asynccontextmanager
    async def store(self) -> AsyncIterator[Store]:
        store = Store.open(async_database_url(self.database_url))
        try:
            await store.upgrade()
            yield store
        finally:
            await store.close()

    async def seed(self, items: Iterable[tuple[str, str, float, int]] = (), *,
                   conversations: Iterable[str] = CONVERSATIONS) -> None:
        """Conversation references pointing at the fake connector, and items (owner, title, score, age in days)."""
        now = datetime.now(UTC)
        async with self.store() as store:
            await store.put_references([
                StoredReference(c, self.connector.url, "tenant-1", f"28:{APP_ID}", "msteams",
                                {"channelId": "msteams", "serviceUrl": self.connector.url, "conversation": {"id": c},
                                 "bot": {"id": f"28:{APP_ID}", "name": "digest"}}, True)
                for c in conversations])
            await store.put_items([(DigestItem(owner, title, f"summary of {title}", f"https://example.test/{i}",
                                               score, now - timedelta(days=age)), None)
                                   for i, (owner, title, score, age) in enumerate(items)])

    @asynccontextmanager
    async def client(self) -> AsyncIterator[ServiceBusClient]:
        async with ServiceBusClient.from_connection_string(self.emulator.connection_string()) as client:
            yield client

    async def send(self, queue: str, *messages: Any, one_by_one: bool = False) -> None:
        async with self.client() as client, client.get_queue_sender(queue) as sender:
            if one_by_one:
                for message in messages:
                    await sender.send_messages(message)
            else:
                await sender.send_messages(list(messages))

    async def peek(self, queue: str, dead_letter: bool = False) -> list[Any]:
        sub = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
        async with self.client() as client, client.get_queue_receiver(queue, sub_queue=sub) as receiver:
            found: list[Any] = []
            seq = 1
            while True:
                page = await receiver.peek_messages(max_message_count=100, sequence_number=seq)
                if not page:
                    return found
                found.extend(page)
                seq = (page[-1].sequence_number or 0) + 1

    async def dead_letters(self, queue: str) -> dict[str, tuple[str | None, str | None]]:
        """message id → (reason, description)."""
        return {str(m.message_id): (m.dead_letter_reason, m.dead_letter_error_description)
                for m in await self.peek(queue, dead_letter=True)}

    @asynccontextmanager
    async def worker(self, queue: str = "digests", **overrides: str) -> AsyncIterator[WorkerApp]:
        app = WorkerApp(load(self.env(queue, **overrides)))
        await app.start()
        task = asyncio.create_task(app.run())
        try:
            yield app
        finally:
            app.stop()
            await asyncio.wait_for(task, 60)

    async def settled(self, app: WorkerApp, count: int, within: float = 30.0) -> None:
        await wait_until(lambda: messages_total(app) >= count, within, f"{count} settlements")


def metric(app: WorkerApp, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


def messages_total(app: WorkerApp) -> float:
    total = 0.0
    for family in app.metrics.registry.collect():
        if family.name == "digest_worker_messages":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


