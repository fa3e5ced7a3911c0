"""The export file: one JSON object per line, lossless for everything the SDK exposes of a dead-lettered message.

Body bytes are base64 with the AMQP body type; application properties and annotations use the typed JSON of
`message.encode_value` (bytes, timestamps and UUIDs survive). `import` re-sends from the same record.
"""

from __future__ import annotations

import datetime
from typing import Any

from digest_dlq.message import DlqMessage, decode_value, encode_value

RECORD_VERSION = 1


def to_record(message: DlqMessage) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "sequenceNumber": message.sequence_number,
        "messageId": message.message_id,
        "enqueuedTime": message.enqueued_time.isoformat() if message.enqueued_time else None,
        "deliveryCount": message.delivery_count,
        "deadLetterReason": message.reason or None,
        "deadLetterErrorDescription": message.description or None,
        "bodyType": message.body_type,
        "body": encode_value(message.body),
        "bodySha256": message.body_hash(),
        "properties": encode_value(message.properties),
        "applicationProperties": encode_value(message.application_properties),
        "annotations": encode_value(message.annotations),
        "header": encode_value(message.header),
    }


class RecordError(ValueError):
    pass


def from_record(record: dict[str, Any], line: int = 0) -> DlqMessage:
    """Parse one export line back; the body hash is verified so a corrupted file is refused, not half-imported."""
    try:
        if record.get("v") != RECORD_VERSION:
            raise RecordError(f"unsupported record version {record.get('v')!r}")
        body_type = record["bodyType"]
        if body_type not in ("data", "sequence", "value"):
            raise RecordError(f"bodyType {body_type!r} is not data, sequence or value")
        enqueued = record.get("enqueuedTime")
        message = DlqMessage(
            sequence_number=int(record["sequenceNumber"]),
            message_id=record.get("messageId"),
            enqueued_time=datetime.datetime.fromisoformat(enqueued) if enqueued else None,
            delivery_count=record.get("deliveryCount"),
            body_type=body_type,
            body=decode_value(record["body"]),
            properties=decode_value(record.get("properties") or {}),
            application_properties=decode_value(record.get("applicationProperties") or {}),
            annotations=decode_value(record.get("annotations") or {}),
            header=decode_value(record.get("header") or {}),
        )
    except RecordError as exc:
        raise RecordError(f"line {line}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"line {line}: malformed record: {exc!r}") from None
    if record.get("bodySha256") and record["bodySha256"] != message.body_hash():
        raise RecordError(f"line {line}: body does not match its bodySha256 (file corrupted?)")
    return message
