"""The posting lease across deliveries: a live lease (another delivery is posting) is never overridden, an expired one
(its poster crashed) is claimed again and the request posted once."""

from __future__ import annotations

import asyncio

from tests.worker.harness import CONVERSATIONS, Stack, metric, request


async def test_a_live_lease_holds_the_post_and_an_expired_one_is_claimed_again(stack: Stack) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    async with stack.store() as store:  # two earlier deliveries took the right to post, and vanished
        for request_id, lease in (("held", 600.0), ("stale", 0.5)):
            assert await store.begin(request_id, f"earlier-{request_id}", CONVERSATIONS[0]) == "received"
            assert (await store.claim(request_id, lease)).status == "claimed"
    await asyncio.sleep(1.0)  # the stale lease runs out
    await stack.send("retries", request("held"), request("stale"))  # MaxDeliveryCount=2
    async with stack.worker("retries") as app:
        await stack.settled(app, 3)  # "stale" delivered; "held" abandoned, then dead-lettered
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 1
    (post,) = stack.connector.delivered()
    assert stack.connector.posts == [post]  # nothing was posted for the held request
    dead = await stack.dead_letters("retries")
    assert list(dead) == ["held"] and dead["held"][0] == "Transient.Exhausted.DuplicateInFlight"
    async with stack.store() as store:
        held, stale = await store.request_row("held"), await store.request_row("stale")
    assert held is not None and (held["state"], held["activity_id"]) == ("sending", None)
    assert stale is not None and (stale["state"], stale["activity_id"], stale["attempts"]) == ("sent", "activity-1", 2)
    assert await stack.peek("retries") == []
