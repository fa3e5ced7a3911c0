"""The DLQ conservation oracle (`tests.support.dlqdata`) without a broker: messages go through the real SDK's codec
(encoded as the sender encodes them, decoded as a peek decodes them, and split as the emulator stores them), and
each way a copy can be unfaithful is reported as exactly the message id and field it changed."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.types import TYPE, VALUE, AMQPTypes
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.amqp import AmqpAnnotatedMessage

from digest_dlq import bus, copy, records
from tests.support.dlqdata import (
    SENT_AT,
    Received,
    Sent,
    compare,
    from_encoded,
    from_export,
    from_sdk,
    varied,
)

TTL_MS = 3_600_000
NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)

BLOB = Sent("m-1", "Poison.BadJson", "data", [b'{"a": 1}', b"\xff\xfe\x00binary", b"", b"tail"],
            {"content_type": "application/octet-stream", "subject": "blob", "correlation_id": "c-1",
             "group_id": "s1"},
            {"tenant": "t1", "n": 5, "flag": True, "ratio": 1.5, "big": "x" * 8000, b"bytes-key": b"bytes-value",
             "ref": uuid.UUID(int=3), "sent-at": SENT_AT},
            datetime.timedelta(minutes=30))
SEQ = Sent("m-2", "Transient.Exhausted.Http", "sequence", [[1, "s", b"\x00\xff", b"utf8"], [True, None]],
           {"subject": "seq"}, {"n": 2})
PLAIN = Sent("m-3", "Transient.Exhausted.Http", "data", [b"one", b"two"], {"subject": "plain"}, {"n": 3})


def encode(message: ServiceBusMessage | AmqpAnnotatedMessage) -> bytes:
    """The bytes the SDK's sender puts on the wire for `message`."""
    annotated = message.raw_amqp_message if isinstance(message, ServiceBusMessage) else message
    return bytes(encode_payload(bytearray(), PyamqpTransport.to_outgoing_amqp_message(annotated)))


def peeked(raw: bytes) -> ServiceBusReceivedMessage:
    """`raw` decoded as the SDK decodes a peeked message (`parse_received_message`)."""
    return ServiceBusReceivedMessage(decode_payload(memoryview(raw)), receiver=None, is_peeked_message=True)


def views(message: ServiceBusMessage | AmqpAnnotatedMessage) -> tuple[Received, Received]:
    raw = encode(message)
    return from_sdk(peeked(raw)), from_encoded(0, raw)


def differences(sent: list[Sent], places: dict[str, list[Any]]) -> set[tuple[str, str, str]]:
    """(level, message id, field) of every difference; `places` hold outgoing SDK messages."""
    out: set[tuple[str, str, str]] = set()
    for index, level in enumerate(("sdk", "wire")):
        seen = {place: [views(m)[index] for m in messages] for place, messages in places.items()}
        out |= {(level, d.message_id, d.field)
                for d in compare(sent, seen, default_ttl_ms=TTL_MS, dead_letter_places=())}
    return out


def both(message_id: str, field: str) -> set[tuple[str, str, str]]:
    return {("sdk", message_id, field), ("wire", message_id, field)}


def test_every_message_of_the_mix_passes_as_sent() -> None:
    sent = varied(60)
    assert differences(sent, {"queue": [s.message() for s in sent]}) == set()
    shapes = {(s.body_type, len(s.body) if s.body_type == "data" else 0) for s in sent}
    assert ("data", 4) in shapes and ("data", 1) in shapes  # several sections, and one
    assert any(not _utf8(part) for s in sent if s.body_type == "data" for part in s.body)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_the_record_keeps_what_the_test_sent_even_after_the_sdk_rewrote_the_message() -> None:
    message = BLOB.message()
    encode(message)  # the SDK decodes bytes application-property values to str in place
    assert BLOB.application_properties[b"bytes-key"] == b"bytes-value"
    assert type(BLOB.application_properties[b"bytes-key"]) is bytes


def test_merged_data_sections() -> None:
    merged = dataclasses.replace(BLOB, body=[b"".join(BLOB.body)]).message()
    assert differences([BLOB], {"queue": [merged]}) == both("m-1", "body: sections")


def test_binary_turned_into_str() -> None:
    as_text = AmqpAnnotatedMessage(value_body=b"".join(BLOB.body).decode("latin-1"),
                                   properties={"message_id": "m-1", **BLOB.properties},
                                   application_properties=dict(BLOB.application_properties),  # type: ignore[arg-type]
                                   header={"time_to_live": 1_800_000})
    assert differences([BLOB], {"queue": [as_text]}) == both("m-1", "body_type")
    # inside a sequence: binary that is not UTF-8 decoded as Latin-1 changes the bytes; binary that is UTF-8 sent
    # back as a string is the same bytes to the SDK, and a string on the wire (an original is not a copy)
    lossy = dataclasses.replace(SEQ, body=[[1, "s", "\x00\xff", b"utf8"], [True, None]]).message()
    assert differences([SEQ], {"queue": [lossy]}) == both("m-2", "body: section 0")
    retyped = dataclasses.replace(SEQ, body=[[1, "s", b"\x00\xff", "utf8"], [True, None]]).message()
    assert differences([SEQ], {"queue": [retyped]}) == {("wire", "m-2", "body: section 0")}


def test_a_dropped_large_property() -> None:
    app = {k: v for k, v in BLOB.application_properties.items() if k != "big"}
    dropped = dataclasses.replace(BLOB, application_properties=app).message()
    assert differences([BLOB], {"queue": [dropped]}) == both("m-1", "application_properties[b'big']")


def test_a_dropped_bytes_keyed_property() -> None:
    app = {k: v for k, v in BLOB.application_properties.items() if k != b"bytes-key"}
    dropped = dataclasses.replace(BLOB, application_properties=app).message()
    assert differences([BLOB], {"queue": [dropped]}) == both("m-1", "application_properties[b'bytes-key']")


def test_a_changed_property_type() -> None:
    for key, value in (("n", "5"), ("flag", 1), ("ratio", 1), ("ref", str(uuid.UUID(int=3)))):
        changed = dataclasses.replace(BLOB, application_properties={**BLOB.application_properties, key: value})
        field = f"application_properties[{key.encode()!r}]"
        assert differences([BLOB], {"queue": [changed.message()]}) == both("m-1", field)
    # an int sent back as an AMQP long is the same int to the SDK; a .NET consumer reads a long
    wider = AmqpAnnotatedMessage(sequence_body=SEQ.body, properties={"message_id": "m-2", "subject": "seq"},
                                 application_properties={"n": {TYPE: AMQPTypes.long, VALUE: 2}})
    assert differences([SEQ], {"queue": [wider]}) == {("wire", "m-2", "application_properties[b'n']")}


def test_a_changed_content_type_or_subject() -> None:
    props = {**BLOB.properties, "content_type": "text/plain"}
    assert differences([BLOB], {"queue": [dataclasses.replace(BLOB, properties=props).message()]}) == \
        both("m-1", "properties.content_type")
    props = {k: v for k, v in BLOB.properties.items() if k != "subject"}
    assert differences([BLOB], {"queue": [dataclasses.replace(BLOB, properties=props).message()]}) == \
        both("m-1", "properties.subject")


def test_ttl_session_and_partition_key() -> None:
    shorter = dataclasses.replace(BLOB, time_to_live=datetime.timedelta(minutes=5)).message()
    assert differences([BLOB], {"queue": [shorter]}) == both("m-1", "time_to_live")
    keyed = dataclasses.replace(PLAIN, partition_key="p1")
    assert differences([keyed], {"queue": [PLAIN.message()]}) == both("m-3", "partition_key")
    sessionless = dataclasses.replace(BLOB, properties={k: v for k, v in BLOB.properties.items() if k != "group_id"})
    assert differences([BLOB], {"queue": [sessionless.message()]}) == both("m-1", "properties.group_id")


def test_a_duplicate_a_loss_and_an_unknown_message() -> None:
    assert differences([BLOB, SEQ], {"queue": [BLOB.message(), SEQ.message()], "other": [BLOB.message()]}) == \
        both("m-1", "duplicated")
    assert differences([BLOB, SEQ], {"queue": [SEQ.message()]}) == both("m-1", "lost")
    stranger = dataclasses.replace(PLAIN, message_id="m-9").message()
    assert differences([PLAIN], {"queue": [PLAIN.message(), stranger]}) == both("m-9", "unknown message")


def copy_of(sent: Sent, *, message_id: str | None = None, extra: dict[str, Any] | None = None) \
        -> AmqpAnnotatedMessage:
    """`sent` as a requeued copy looks (docs/dlq.md, "The copy"), with `extra` application properties."""
    app: dict[Any, Any] = {**sent.application_properties, "x-original-message-id": sent.message_id,
                           "x-requeue-count": 1, "x-original-sequence-number": 7, "x-requeued-at": NOW.isoformat(),
                           **(extra or {})}
    return AmqpAnnotatedMessage(data_body=list(sent.body),
                                properties={"message_id": message_id or f"{sent.message_id}:rq1", **sent.properties},
                                application_properties={k: v for k, v in app.items() if v is not None})


def test_a_copy_carries_the_toolkit_keys_and_nothing_else() -> None:
    assert differences([PLAIN], {"queue": [copy_of(PLAIN)]}) == set()
    assert differences([PLAIN], {"queue": [copy_of(PLAIN, message_id="m-3")]}) == set()  # a preserved id
    assert differences([PLAIN], {"queue": [copy_of(PLAIN, message_id="m-3:rq2")]}) == \
        both("m-3", "properties.message_id")
    assert differences([PLAIN], {"queue": [copy_of(PLAIN, extra={"DeadLetterReason": "x"})]}) == \
        both("m-3", "application_properties[b'DeadLetterReason']")
    assert differences([PLAIN], {"queue": [copy_of(PLAIN, extra={"x-debug": 1})]}) == \
        both("m-3", "application_properties[b'x-debug']")
    assert differences([PLAIN], {"queue": [copy_of(PLAIN, extra={"x-requeue-count": "1"})]}) == \
        both("m-3", "application_properties[b'x-requeue-count']") | both("m-3", "properties.message_id")


def _dead_lettered(sent: Sent) -> ServiceBusReceivedMessage:
    """`sent` as the SDK peeks it from a dead-letter queue (the broker adds the reason to its properties)."""
    message = dataclasses.replace(sent, application_properties={
        **sent.application_properties, "DeadLetterReason": sent.reason,
        "DeadLetterErrorDescription": sent.description}).message()
    return peeked(encode(message))


def test_the_toolkits_copy_of_every_message_of_the_mix_is_faithful() -> None:
    # The copy built and encoded by digest_dlq (from_received -> build_copy -> to_amqp) of each dead-lettered
    # message: exact through the SDK; on the wire only what `copied` allows (timestamps, UTF-8 binary in bodies).
    sent = varied(60)
    copies = [bus.to_amqp(copy.build_copy(bus.from_received(_dead_lettered(s)), id_mode="regenerate", now=NOW))
              for s in sent]
    assert differences(sent, {"queue": copies}) == set()


def test_an_export_record_is_read_independently_and_checked_like_a_message() -> None:
    sent = varied(12)
    exported = [from_export(records.to_record(bus.from_received(_dead_lettered(s)))) for s in sent]
    assert compare(sent, {"export": exported}, default_ttl_ms=TTL_MS) == []
    exported[4].application_properties.pop(b"tenant")
    assert [(d.message_id, d.field) for d in compare(sent, {"export": exported}, default_ttl_ms=TTL_MS)] == \
        [("m-00004", "application_properties[b'tenant']")]
