"""Happy path and idempotency, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.fakes import PUBLIC_CLOUD_LOGIN_HOST, CloudLoginProxy
from tests.worker.harness import APP_ID, CONVERSATIONS, Stack, metric, request, wait_until


async def test_happy_path_posts_one_card_with_the_right_content(stack: Stack) -> None:
    await stack.seed([("ana", "Release 2.0", 9.0, 1), ("bo", "Old news", 8.0, 30), ("ana", "Hotfix", 5.0, 2),
                      ("cy", "Roadmap", 7.0, 3)])
    await stack.send("digests", request("r-1", title="Weekly digest", owner="ana"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 1
    posts = stack.connector.delivered(CONVERSATIONS[0])
    assert len(posts) == 1
    post = posts[0]
    assert post.reply_to is None  # send_to_conversation, not a reply to the synthetic continuation id
    assert post.path == f"/v3/conversations/{CONVERSATIONS[0]}/activities"
    assert post.headers["Authorization"].startswith("Bearer token-")
    assert post.json["type"] == "message"
    assert post.json["channelData"] == {"tenant": {"id": "tenant-1"}}
    card = post.json["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    text = str(card["content"])
    assert "Weekly digest" in text and "Release 2.0" in text and "Hotfix" in text
    assert "Old news" not in text and "Roadmap" not in text  # outside the range / another owner
    assert text.index("Release 2.0") < text.index("Hotfix")  # by score
    assert post.json["from"]["id"] == f"28:{APP_ID}"
    assert await stack.peek("digests") == []
    async with stack.store() as store:
        row = await store.request_row("r-1")
    assert row is not None and row["state"] == "sent" and row["activity_id"] == "activity-1"


async def test_duplicates_and_redeliveries_post_once(stack: Stack) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    # the same request three times, processed concurrently: twice the same message id (a producer retry), once
    # under another message id (request_id in the body is the key)
    other = request("dup-1")
    other.message_id = "another-message-id"
    await stack.send("digests", request("dup-1"), request("dup-1"), other, request("single"))
    async with stack.worker() as app:
        await wait_until(lambda: metric(app, "digest_worker_messages_total", outcome="completed", reason="duplicate")
                         + metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 4,
                         what="all four completed")
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 2
    # a later redelivery of an already sent request is completed without posting
    await stack.send("digests", request("dup-1"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="duplicate") == 1
    assert len(stack.connector.delivered()) == 2
    assert await stack.peek("digests") == []
    assert await stack.dead_letters("digests") == {}


async def test_token_is_fetched_once_for_many_sends(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", *[request(f"t-{i}") for i in range(6)])
    async with stack.worker() as app:
        await stack.settled(app, 6)
        await wait_until(lambda: len(stack.connector.delivered()) == 6)
        assert metric(app, "digest_worker_teams_requests_total", status_class="2xx") == 6
    assert stack.tokens.token_requests == 1


async def test_single_tenant_app_gets_its_token_from_its_tenant(sqlite_stack: Stack,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A SingleTenant app on the public cloud (no login URL set): the SDK's own authority, the login host + the
    tenant. Reached on this machine through a CONNECT proxy to the local token endpoint (the client library honours
    HTTPS_PROXY; nothing is resolved or sent elsewhere)."""
    stack = sqlite_stack
    proxy = CloudLoginProxy(stack.tokens.port).start()
    try:
        for name in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        await stack.seed([("ana", "Item", 1.0, 1)])
        await stack.send("digests", request("st-1"))
        async with stack.worker(DIGEST_TEAMS_APP_TYPE="SingleTenant", DIGEST_TEAMS_TENANT_ID="tenant-x",
                                DIGEST_TEAMS_LOGIN_URL="", DIGEST_TEAMS_OAUTH_SCOPE="") as app:
            await stack.settled(app, 1)
    finally:
        proxy.stop()
    assert len(stack.connector.delivered()) == 1
    assert stack.tokens.grants, "no token request reached the login endpoint"
    for grant in stack.tokens.grants:
        assert (grant["host"], grant["tenant"], grant["client_id"]) == (PUBLIC_CLOUD_LOGIN_HOST, "tenant-x", APP_ID)
    assert proxy.tunnels and set(proxy.tunnels) == {f"{PUBLIC_CLOUD_LOGIN_HOST}:443"} and proxy.refused == []


async def test_user_assigned_msi_with_workload_identity(sqlite_stack: Stack, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """AKS workload identity: azure-identity exchanges the projected service-account token (client assertion)."""
    stack = sqlite_stack
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(stack.tokens.assertion)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("wi-1"), request("wi-2"))
    async with stack.worker(DIGEST_TEAMS_APP_TYPE="UserAssignedMSI", DIGEST_TEAMS_TENANT_ID="tenant-x",
                            DIGEST_TEAMS_APP_PASSWORD="", DIGEST_TEAMS_LOGIN_URL=stack.tokens.base) as app:
        await stack.settled(app, 2)
    posts = stack.connector.delivered()
    assert len(posts) == 2 and all(p.headers["Authorization"].startswith("Bearer token-") for p in posts)
    grants = stack.tokens.grants
    assert len(grants) == 1  # azure-identity caches the token
    assert grants[0]["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert grants[0]["client_id"] == APP_ID
    assert (grants[0]["host"], grants[0]["tenant"]) == (f"127.0.0.1:{stack.tokens.port}", "tenant-x")


async def test_connector_client_reused_replaced_after_a_failure_and_closed(sqlite_stack: Stack) -> None:
    """Posts share one aiohttp session per service URL; a failed post retires it (closed later) and the next post
    gets a new one; closing the delivery closes every session, retired or current."""
    stack = sqlite_stack
    from digest_worker.config import load
    from digest_worker.teams import TeamsDelivery
    from tests.worker.fakes import Reply

    await stack.seed()
    async with stack.store() as store:
        reference = await store.reference(CONVERSATIONS[0])
    assert reference is not None
    activity = {"type": "message", "text": "hi"}
    teams = TeamsDelivery(load(stack.env()))
    try:
        assert await teams.send(reference, activity) == "activity-1"
        assert await teams.send(reference, activity) == "activity-2"
        first = teams._connectors[reference.service_url][2]
        stack.connector.script(CONVERSATIONS[0], Reply(503))
        with pytest.raises(Exception, match="503"):
            await teams.send(reference, activity)
        assert await teams.send(reference, activity) == "activity-3"
        current = teams._connectors[reference.service_url][2]
        assert current is not first and list(teams._retired.values()) == [first]
        assert not first.driver._session.closed  # a post still using it may be in flight
    finally:
        await teams.close()
    assert first.driver._session.closed and current.driver._session.closed
    assert teams.credentials.token_fetches == 2  # one per client built, from MSAL's cache after the first
