"""PostgreSQL's own faults: the server stopped mid-run, pooled connections killed, two workers migrating at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from digest_sbemulator.server import EmulatorServer
from digest_worker.app import WorkerApp
from digest_worker.config import load
from digest_worker.db import migrate
from tests.worker.fakes import FakeConnector, FakeTokenEndpoint
from tests.worker.harness import Stack, metric, request, wait_until
from tests.worker.postgres import PostgresServer, database_name, postgres_server


@pytest.fixture
def own_pg_server() -> Iterator[PostgresServer]:
    """A server of the test's own: it is stopped and started again."""
    with postgres_server() as server:
        yield server


def failures(app: WorkerApp, outcome: str) -> float:
    return sum(s.value for family in app.metrics.registry.collect() if family.name == "digest_worker_messages"
               for s in family.samples if s.name.endswith("_total") and s.labels.get("outcome") == outcome)


async def test_server_stopped_mid_run_loses_nothing_and_the_worker_resumes(
        worker_emulator: EmulatorServer, connector: FakeConnector, tokens: FakeTokenEndpoint,
        own_pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = own_pg_server
    stack = Stack(worker_emulator, connector, tokens, await asyncio.to_thread(server.create_database, "digests"))
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "1.5")
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("before"))
    async with stack.worker(DIGEST_SOURCE="tests.worker.sources:slow") as app:
        await stack.settled(app, 1)
        await stack.send("digests", request("in-flight"))
        await wait_until(lambda: metric(app, "digest_worker_in_flight") == 1, what="a digest being built")
        await asyncio.to_thread(server.stop)  # while "in-flight" is being built: its claim fails
        await stack.send("digests", *[request(f"while-down-{i}") for i in range(3)])
        await wait_until(lambda: metric(app, "digest_worker_paused") == 1, what="the worker paused")
        assert metric(app, "digest_worker_systemic_failures_total", kind="DatabaseUnavailable") >= 1
        await asyncio.sleep(2)  # down for a while: several systemic checks fail, nothing is taken meanwhile
        assert connector.delivered() and len(connector.delivered()) == 1
        await asyncio.to_thread(server.start)
        await wait_until(lambda: len(connector.delivered()) == 5, within=40, what="everything delivered")
        await wait_until(lambda: metric(app, "digest_worker_paused") == 0, what="resumed")
        assert failures(app, "dead_lettered") == 0
    ids = ["before", "in-flight", *[f"while-down-{i}" for i in range(3)]]
    posted = sorted(p.json["attachments"][0]["content"]["body"][0]["text"] for p in connector.delivered())
    assert len(posted) == 5
    async with stack.store() as store:
        rows = {i: await store.request_row(i) for i in ids}
    assert {i: (r or {}).get("state") for i, r in rows.items()} == dict.fromkeys(ids, "sent")
    assert len({(r or {}).get("activity_id") for r in rows.values()}) == 5  # one post each
    assert await stack.peek("digests") == []
    assert await stack.dead_letters("digests") == {}


async def test_killed_pooled_connections_are_replaced_on_next_use(pg_stack: Stack, pg_server: PostgresServer) -> None:
    stack, database = pg_stack, database_name(pg_stack.database_url)
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("first"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
        killed = await pg_server.terminate_backends(database)  # the worker's idle pooled connections
        assert killed
        await stack.send("digests", request("second"), request("third"))
        await stack.settled(app, 3)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 3
        assert failures(app, "abandoned") == failures(app, "dead_lettered") == 0
        assert metric(app, "digest_worker_paused") == 0
        assert not (await pg_server.backends(database)) & killed  # new server processes serve it
    assert len(stack.connector.delivered()) == 3
    assert await stack.dead_letters("digests") == {}


async def test_two_workers_migrating_one_empty_database_at_once(pg_stack: Stack) -> None:
    stack = pg_stack
    apps = [WorkerApp(load(stack.env())) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*(app.start() for app in apps)), 30)  # both migrate, concurrently
    tasks = [asyncio.create_task(app.run()) for app in apps]
    try:
        for app in apps:
            assert app.consumer.pause is None
            assert metric(app, "digest_worker_systemic_failures_total", kind="DatabaseUnavailable") == 0
            assert metric(app, "digest_worker_paused") == 0
        async with stack.store() as store:
            from sqlalchemy import text

            async with store.engine.connect() as conn:
                versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
                tables = (await conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"))).all()
        assert [tuple(v) for v in versions] == [(migrate.HEAD,)]
        assert [t[0] for t in tables] == ["alembic_version", "conversation_references", "digest_items",
                                          "digest_requests"]
        await stack.seed([("ana", "Item", 1.0, 1)])
        await stack.send("digests", *[request(f"m-{i}") for i in range(6)])
        await wait_until(lambda: len(stack.connector.delivered()) == 6, what="6 delivered by the two workers")
    finally:
        for app in apps:
            app.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert await stack.dead_letters("digests") == {}
