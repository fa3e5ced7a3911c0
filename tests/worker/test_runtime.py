"""Runtime properties: the token fetch never blocks the event loop; probes; a missing schema pauses the worker."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from tests.worker.harness import Stack, metric, request, wait_until


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_token_fetch_does_not_block_the_event_loop(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    await stack.seed([("ana", "Item", 1.0, 1)])
    release = threading.Event()
    entered = threading.Event()

    async def hold() -> None:  # runs on the token endpoint's own loop: holds the token request open
        entered.set()
        await asyncio.to_thread(release.wait, 30)

    async with stack.worker() as app:
        assert app.port is not None
        await stack.settled(app, 0)
        stack.tokens.on_token = hold
        # a fresh credentials cache forces a token fetch on the next send
        app.teams.credentials._cache.clear()
        await stack.send("digests", request("while-token-held"))
        await wait_until(entered.is_set, what="the worker to ask for a token")
        # the worker's loop is free while its token request hangs: probes and metrics answer
        status, body = await asyncio.wait_for(get(app.port, "/metrics"), 5)
        assert status == 200 and "digest_worker_in_flight 1.0" in body
        status, _ = await asyncio.wait_for(get(app.port, "/healthz"), 5)
        assert status == 200
        release.set()
        await stack.settled(app, 1)
    assert len(stack.connector.delivered()) == 1


async def test_probes_and_metrics(stack: Stack) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("m-1"))
    async with stack.worker() as app:
        assert app.port is not None
        await stack.settled(app, 1)
        assert (await get(app.port, "/healthz"))[0] == 200
        assert (await get(app.port, "/readyz"))[0] == 200
        _, text = await get(app.port, "/metrics")
    for name in ('digest_worker_messages_total{outcome="completed",reason="delivered"} 1.0',
                 "digest_worker_processing_seconds_bucket", "digest_worker_in_flight 0.0",
                 'digest_worker_teams_requests_total{status_class="2xx"} 1.0',
                 "digest_worker_last_success_timestamp_seconds", "digest_worker_paused 0.0"):
        assert name in text, name


async def test_missing_schema_pauses_without_dead_lettering(stack: Stack) -> None:
    await stack.send("digests", request("no-schema"))
    # migrations off and an empty database: the worker starts paused and takes nothing
    async with stack.worker(DIGEST_DATABASE_MIGRATE="false") as app:
        assert app.port is not None
        await wait_until(lambda: metric(app, "digest_worker_paused") == 1)
        status, body = await get(app.port, "/readyz")
        assert status == 503 and "DatabaseSchemaMissing" in body
        assert metric(app, "digest_worker_systemic_failures_total", kind="DatabaseSchemaMissing") == 1
        # the schema appears (a migration job ran): the worker resumes and delivers
        await stack.seed([("ana", "Item", 1.0, 1)])
        await stack.settled(app, 1)
        assert metric(app, "digest_worker_paused") == 0
    assert len(stack.connector.delivered()) == 1
    assert await stack.dead_letters("digests") == {}


async def test_dropped_connection_mid_flight_reconnects_and_posts_once(stack: Stack,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "2")
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("net-1"))
    async with stack.worker(DIGEST_SOURCE="tests.worker.sources:slow") as app:
        await wait_until(lambda: metric(app, "digest_worker_in_flight") == 1, what="in flight")
        assert stack.emulator.drop_connections() >= 1  # the network fails: the lock is lost with the connection
        # the settlement of the in-flight message fails; the worker reconnects and the redelivery is a duplicate
        await wait_until(lambda: metric(app, "digest_worker_messages_total", outcome="completed",
                                        reason="duplicate") == 1, within=40, what="the redelivery completed")
        await stack.send("digests", request("net-2"))
        await wait_until(lambda: len(stack.connector.delivered()) == 2, within=30, what="a new message delivered")
    assert sorted(p.json["attachments"][0]["content"]["body"][0]["text"] for p in stack.connector.delivered()) == [
        "Digest of the last 7 days"] * 2
    async with stack.store() as store:
        row = await store.request_row("net-1")
    assert row is not None and row["state"] == "sent"
    assert await stack.dead_letters("digests") == {}
