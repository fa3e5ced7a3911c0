"""Teams failures: transient ones are retried then dead-lettered with the reason; permanent ones at once; systemic
ones pause the worker without dead-lettering; a slow digest keeps its lock."""

from __future__ import annotations

import aiohttp
import pytest

from tests.worker.fakes import Reply
from tests.worker.harness import CONVERSATIONS, Stack, metric, request, wait_until

CONV = CONVERSATIONS[0]


@pytest.mark.parametrize(("reply", "kind"), [
    (Reply(429, {"error": {"code": "Throttled", "message": "slow"}}, {"Retry-After": "1"}), "TeamsTooManyRequests"),
    (Reply(503, "<html><body>Service Unavailable</body></html>"), "TeamsBadGateway"),
    (Reply(502, {"error": {"code": "BadGateway", "message": "upstream"}}), "TeamsBadGateway"),
    (Reply(201, delay=3.0), "TeamsTimeout"),
])
async def test_transient_failures_are_retried_then_exhausted(stack: Stack, reply: Reply, kind: str) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    stack.connector.always[CONV] = reply
    await stack.send("retries", request("t-1"))
    async with stack.worker("retries") as app:
        await stack.settled(app, 2)
        assert metric(app, "digest_worker_messages_total", outcome="abandoned", reason="failed") == 1
    reason, description = (await stack.dead_letters("retries"))["t-1"]
    assert reason == f"Transient.Exhausted.{kind}"
    assert description is not None and description.startswith("attempt 2 of 2: ")
    await wait_until(lambda: not stack.connector.pending(), what="the connector's answers written")
    attempts = stack.connector.attempts(CONV)
    assert len(attempts) == 2  # one connector request per attempt: no hidden retries
    # what the worker saw: the error answer, or (the timeout) no answer at all, so Teams accepted nothing
    assert [(p.status, p.completed) for p in attempts] == [(reply.status, kind != "TeamsTimeout")] * 2
    assert stack.connector.delivered() == []
    async with stack.store() as store:
        row = await store.request_row("t-1")
    assert row is not None and row["state"] == "received" and row["attempts"] == 2


async def test_429_then_success_posts_once_after_retry_after(stack: Stack) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    stack.connector.script(CONV, Reply(429, {}, {"Retry-After": "1"}))
    await stack.send("digests", request("throttled"))
    async with stack.worker() as app:
        await wait_until(lambda: len(stack.connector.delivered(CONV)) == 1)
        await stack.settled(app, 2)
    first, second = stack.connector.attempts(CONV)
    assert (first.status, first.completed, second.status, second.completed) == (429, True, 201, True)
    assert first.answered_at is not None
    # the retry waited out Retry-After from the moment the 429 was answered (a lower bound only: the 1 ms is the
    # event loop's early wake-up allowance)
    assert second.received_at - first.answered_at >= 1.0 - 0.001
    assert await stack.dead_letters("digests") == {}


@pytest.mark.parametrize(("status", "kind"), [(403, "TeamsForbidden"), (404, "TeamsNotFound")])
async def test_403_404_dead_letter_and_mark_the_reference_inactive(stack: Stack, status: int, kind: str) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    stack.connector.script(CONV, Reply(status, {"error": {"code": "BotNotInConversationRoster", "message": "gone"}}))
    await stack.send("digests", request("p-1"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
        await stack.send("digests", request("p-2"))
        await stack.settled(app, 2)
    dead = await stack.dead_letters("digests")
    assert dead["p-1"][0] == f"Permanent.{kind}"
    assert dead["p-1"][1] is not None and "BotNotInConversationRoster" in dead["p-1"][1]
    assert dead["p-2"][0] == "Permanent.InactiveConversation"
    assert len(stack.connector.attempts(CONV)) == 1  # the second request never reached the connector
    async with stack.store() as store:
        ref = await store.reference(CONV)
        row = await store.request_row("p-1")
    assert ref is not None and not ref.active
    assert row is not None and row["state"] == "failed"


@pytest.mark.parametrize(("status", "kind"), [(400, "TeamsBadRequest"), (413, "TeamsRequestEntityTooLarge")])
async def test_other_permanent_statuses(stack: Stack, status: int, kind: str) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    stack.connector.script(CONV, Reply(status, {"error": {"code": "BadArgument", "message": "no"}}))
    await stack.send("digests", request("bad"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
        assert metric(app, "digest_worker_messages_total", outcome="dead_lettered", reason=f"Permanent.{kind}") == 1
    reason, description = (await stack.dead_letters("digests"))["bad"]
    assert reason == f"Permanent.{kind}"
    assert description is not None and description.startswith(f"HTTP {status}: BadArgument: no"), description
    assert len(stack.connector.attempts(CONV)) == 1  # permanent: not retried
    async with stack.store() as store:
        ref = await store.reference(CONV)
        row = await store.request_row("bad")
    assert ref is not None and ref.active  # only 403/404 deactivate
    assert row is not None and row["state"] == "failed"


async def readyz(app_port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app_port}/readyz") as response:
        return response.status, await response.json()


async def test_wrong_teams_secret_pauses_without_dead_lettering(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("s-1"), request("s-2"))
    async with stack.worker(DIGEST_TEAMS_APP_PASSWORD="wrong-secret") as app:
        assert app.port is not None
        await wait_until(lambda: stack.tokens.token_requests >= 3, what="systemic checks retried with backoff")
        status, body = await readyz(app.port)
        assert status == 503 and body["paused"] == {
            "kind": "TeamsCredentialsRejected", "detail": body["paused"]["detail"]}  # type: ignore[index]
        assert "invalid_client" in str(body["paused"])
        assert metric(app, "digest_worker_paused") == 1
        assert metric(app, "digest_worker_systemic_failures_total", kind="TeamsCredentialsRejected") == 1
        assert stack.connector.posts == []
        assert len(await stack.peek("digests")) == 2  # nothing taken, nothing dead-lettered
        # the operator fixes the secret (here: the identity provider accepts it): the worker resumes by itself
        stack.tokens.secret = "wrong-secret"
        await stack.settled(app, 2)
        assert metric(app, "digest_worker_paused") == 0
        status, _ = await readyz(app.port)
        assert status == 200
    assert await stack.dead_letters("digests") == {}
    assert len(stack.connector.delivered()) == 2


async def test_connector_401_mid_flight_pauses_and_abandons(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    await stack.seed([("ana", "Item", 1.0, 1)])
    stack.connector.script(CONV, Reply(401, {"error": {"code": "Unauthorized", "message": "token rejected"}}))
    await stack.send("retries", request("u-1"))
    async with stack.worker("retries") as app:
        await wait_until(lambda: len(stack.connector.delivered(CONV)) == 1, what="delivery after the pause")
        assert metric(app, "digest_worker_systemic_failures_total", kind="TeamsUnauthorized") == 1
        assert metric(app, "digest_worker_messages_total", outcome="abandoned", reason="failed") == 1
        await stack.settled(app, 2)
    assert await stack.dead_letters("retries") == {}


async def test_slow_digest_outlives_the_lock_thanks_to_renewal(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "7")
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("slow", request("slow-1"))
    async with stack.worker("slow", DIGEST_SOURCE="tests.worker.sources:slow") as app:  # LockDuration=PT4S
        await stack.settled(app, 1, within=30)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 1
        assert metric(app, "digest_worker_lock_renewals_total", result="ok") >= 2
    assert len(stack.connector.delivered()) == 1
    assert await stack.peek("slow") == []
    assert await stack.dead_letters("slow") == {}
