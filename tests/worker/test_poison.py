"""Every poison input is dead-lettered at once with a precise reason, and the worker keeps running."""

from __future__ import annotations

import json

from azure.servicebus import ServiceBusMessage
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties

from digest_worker.producer import poison
from tests.worker.harness import CONVERSATIONS, Stack, metric, request, wait_until


def amqp(message_id: str, **body: object) -> AmqpAnnotatedMessage:
    return AmqpAnnotatedMessage(**body, properties=AmqpMessageProperties(message_id=message_id))  # type: ignore[arg-type]


async def test_poison_inputs_are_dead_lettered_with_the_field_named(stack: Stack) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    good = {"conversation_id": CONVERSATIONS[0]}
    cases: dict[str, tuple[object, str]] = {
        "not-json": (amqp("not-json", **poison("not_json", "x", "c")), "body: not JSON"),
        "wrong-type": (amqp("wrong-type", **poison("wrong_type", "x", "c")), "max_items: Input should be a valid int"),
        "out-of-range": (amqp("out-of-range", **poison("out_of_range", "x", "c")),
                         "date_range_days: Input should be less than or equal to 90"),
        "non-utf8": (amqp("non-utf8", **poison("non_utf8", "x", "c")), "body: not UTF-8"),
        "empty": (amqp("empty", **poison("empty", "x", "c")), "body: empty"),
        "value-int": (amqp("value-int", **poison("value_body", "x", "c")), "value body of type int"),
        "sequence": (amqp("sequence", **poison("sequence_body", "x", "c")), "sequence bodies are not supported"),
        "one-megabyte": (ServiceBusMessage(b"{" + b" " * 1_000_000 + b"}", message_id="one-megabyte"),
                         "body: more than 65536 bytes"),
        "missing-conversation": (ServiceBusMessage(json.dumps({"max_items": 3}), message_id="missing-conversation"),
                                 "conversation_id: Field required"),
        "text-plain": (ServiceBusMessage(json.dumps(good), message_id="text-plain", content_type="text/plain"),
                       "content_type: 'text/plain' is not application/json"),
    }
    await stack.send("digests", *[m for m, _ in cases.values()], one_by_one=True)
    # a VALUE body holding a JSON map and a multi-section DATA body are valid requests
    await stack.send("digests", amqp("value-map", value_body={"conversation_id": CONVERSATIONS[0]}),
                     amqp("two-sections", data_body=[b'{"conversation_id": "', CONVERSATIONS[0].encode() + b'"}']),
                     request("after-poison"))
    async with stack.worker() as app:
        await stack.settled(app, len(cases) + 3)
        assert metric(app, "digest_worker_messages_total", outcome="dead_lettered",
                      reason="Permanent.InvalidMessage") == len(cases)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 3
        assert app.consumer.ready
    dead = await stack.dead_letters("digests")
    assert set(dead) == set(cases)
    for message_id, (_, fragment) in cases.items():
        reason, description = dead[message_id]
        assert reason == "Permanent.InvalidMessage", message_id
        assert description is not None and fragment in description, (message_id, description)
    assert len(stack.connector.delivered()) == 3
    assert await stack.peek("digests") == []


async def test_unknown_conversation_is_permanent(stack: Stack) -> None:
    await stack.seed([])
    await stack.send("digests", request("nowhere", conversation_id="19:unknown@thread"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
    reason, description = (await stack.dead_letters("digests"))["nowhere"]
    assert reason == "Permanent.UnknownConversation"
    assert description is not None and "19:unknown@thread" in description
    assert stack.connector.posts == []


async def test_empty_digest_posts_nothing_new_or_is_skipped(stack: Stack) -> None:
    await stack.seed([])
    await stack.send("digests", request("empty-1"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
    card = str(stack.connector.delivered()[0].json["attachments"][0]["content"])
    assert "Nothing new." in card
    await stack.send("digests", request("empty-2"))
    async with stack.worker(DIGEST_POST_EMPTY_DIGEST="false") as app:
        await stack.settled(app, 1)
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="skipped") == 1
    await wait_until(lambda: len(stack.connector.posts) == 1)
