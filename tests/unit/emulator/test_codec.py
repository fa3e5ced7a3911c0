"""Message sections: what the real SDK encodes splits cleanly, and what the emulator re-encodes the SDK decodes."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch, ServiceBusReceivedMessage
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.message import BatchMessage
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType

from digest_sbemulator import codec, queue


def _sdk_encode(message: ServiceBusMessage | AmqpAnnotatedMessage) -> bytes:
    annotated = message if isinstance(message, AmqpAnnotatedMessage) else message.raw_amqp_message
    out = bytearray()
    encode_payload(out, PyamqpTransport.to_outgoing_amqp_message(annotated))
    return bytes(out)


def _deliver(raw: bytes, **kw: Any) -> ServiceBusReceivedMessage:
    sections = codec.split(raw)
    annotations = {**sections.message_annotations, "x-opt-sequence-number": 42}
    out = codec.encode_for_delivery(sections.bare, delivery_count=kw.pop("delivery_count", 0), ttl_ms=None,
                                    annotations=annotations, **kw)
    return ServiceBusReceivedMessage.from_bytes(out)


def test_properties_round_trip_through_the_emulator_encoding() -> None:
    sent = ServiceBusMessage(
        "hello", message_id="m-1", correlation_id="c-1", session_id="s-1", reply_to="r", to="t", subject="subj",
        content_type="application/json", time_to_live=datetime.timedelta(seconds=30),
        application_properties={"k": "v", "n": 5},
    )
    raw = _sdk_encode(sent)
    sections = codec.split(raw)
    assert sections.message_id == "m-1"
    assert sections.ttl_seconds == 30
    got = _deliver(raw, delivery_count=3)
    assert (got.message_id, got.correlation_id, got.session_id, got.reply_to, got.to, got.subject) == (
        "m-1", "c-1", "s-1", "r", "t", "subj")
    assert got.content_type == "application/json"
    assert got.application_properties == {b"k": b"v", b"n": 5}
    assert got.delivery_count == 3
    assert got.sequence_number == 42
    assert str(got) == "hello"


def test_partition_key_annotation_is_kept() -> None:
    raw = _sdk_encode(ServiceBusMessage("x", partition_key="pk", session_id="pk"))
    assert _deliver(raw).partition_key == "pk"


@pytest.mark.parametrize(("body", "body_type", "expected"), [
    ({"data_body": [b"one", b"two"]}, AmqpMessageBodyType.DATA, [b"one", b"two"]),
    ({"value_body": {"a": 1}}, AmqpMessageBodyType.VALUE, {b"a": 1}),
    ({"sequence_body": [[1, 2], [3]]}, AmqpMessageBodyType.SEQUENCE, [[1, 2], [3]]),
])
def test_body_types_survive(body: dict[str, Any], body_type: AmqpMessageBodyType, expected: Any) -> None:
    got = _deliver(_sdk_encode(AmqpAnnotatedMessage(**body)))
    assert got.body_type == body_type
    value = got.body if body_type == AmqpMessageBodyType.VALUE else list(got.body)
    assert value == expected


def test_typed_message_ids_survive() -> None:
    identifier = uuid.uuid4()
    got = _deliver(_sdk_encode(AmqpAnnotatedMessage(data_body=b"x", properties={"message_id": identifier})))
    assert got.message_id == identifier


def test_dead_letter_properties_are_merged_into_application_properties() -> None:
    raw = _sdk_encode(ServiceBusMessage("x", application_properties={"k": "v"}))
    got = _deliver(raw, application_properties={"DeadLetterReason": "R", "DeadLetterErrorDescription": "D"})
    assert (got.dead_letter_reason, got.dead_letter_error_description) == ("R", "D")
    assert (got.application_properties or {})[b"k"] == b"v"
    bare = _deliver(_sdk_encode(ServiceBusMessage("y")), application_properties={"DeadLetterReason": "R"})
    assert bare.dead_letter_reason == "R"
    assert str(bare) == "y"


def test_batches_unpack_into_their_messages() -> None:
    batch = ServiceBusMessageBatch(max_size_in_bytes=1_000_000, amqp_transport=PyamqpTransport)
    for i in range(5):
        batch.add_message(ServiceBusMessage(f"body-{i}", message_id=f"id-{i}"))
    out = bytearray()
    encode_payload(out, batch._message)
    assert BatchMessage._code == codec.BATCH_MESSAGE_FORMAT
    parts = codec.unpack_batch(codec.split(bytes(out)))
    assert [codec.split(p).message_id for p in parts] == [f"id-{i}" for i in range(5)]
    assert [str(_deliver(p)) for p in parts] == [f"body-{i}" for i in range(5)]


def test_a_batch_must_carry_only_data_sections() -> None:
    with pytest.raises(codec.CodecError, match="only data sections"):
        codec.unpack_batch(codec.split(_sdk_encode(AmqpAnnotatedMessage(value_body=1))))


def test_garbage_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError):
        codec.split(b"\x00\x53\x77\xff\xff")


def test_lock_keys_tags_and_tokens_agree_with_what_the_sdk_reads() -> None:
    key = 0x0123456789ABCDEF_FEDCBA9876543210
    token = queue.lock_token(key)
    assert uuid.UUID(bytes_le=queue.lock_tag(key)) == token  # the SDK's lock token of a delivery with that tag
    assert queue.lock_key(token) == key  # what comes back in management requests names the same lock


@pytest.mark.parametrize("message", [
    ServiceBusMessage(b"x" * 70_000, message_id="big", application_properties={"k": "v"},
                      time_to_live=datetime.timedelta(seconds=9), partition_key="p"),
    AmqpAnnotatedMessage(data_body=[b"one", b"two"], properties={"message_id": "d"}),
    AmqpAnnotatedMessage(value_body={"k": [1, 2.5, "three"]}, application_properties={"a": 1}),
    AmqpAnnotatedMessage(sequence_body=[[1, "a"]], footer={"f": "x"}),
], ids=["data-32", "data-several", "value", "sequence-footer"])
def test_a_lazy_split_locates_what_it_does_not_decode(message: ServiceBusMessage | AmqpAnnotatedMessage) -> None:
    raw = _sdk_encode(message)
    full, lazy = codec.split(raw), codec.split(raw, lazy=True)
    assert (lazy.header, lazy.message_annotations, lazy.properties, lazy.body_codes, lazy.data_sections, lazy.bare) \
        == (full.header, full.message_annotations, full.properties, full.body_codes, full.data_sections, full.bare)
    assert lazy.application_properties == {} and lazy.body_value is None  # not decoded: stored as they are


def test_a_lazy_split_unpacks_batches_and_still_refuses_garbage() -> None:
    batch = ServiceBusMessageBatch(max_size_in_bytes=1024 * 1024, amqp_transport=PyamqpTransport)
    for i in range(3):
        batch.add_message(ServiceBusMessage(b"y" * (100 * i), message_id=f"id-{i}"))
    out = bytearray()
    encode_payload(out, batch._message)
    parts = codec.unpack_batch(codec.split(bytes(out), lazy=True))
    assert [codec.split(p, lazy=True).message_id for p in parts] == ["id-0", "id-1", "id-2"]
    for garbage in (b"\x00\x53\x77\xff\xff", b"\x00\x53\x75\xb0\x00\x00\x01\x00ab", b"\x41"):
        with pytest.raises(codec.CodecError):
            codec.split(garbage, lazy=True)
