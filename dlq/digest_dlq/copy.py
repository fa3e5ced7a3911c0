"""A faithful copy of a dead-lettered message, built from an allow-list (never by re-sending the received object).

Kept: body and body type, the AMQP properties in `PROPERTY_FIELDS`, the TTL, application properties, the partition
keys. Dropped: DeadLetterReason/DeadLetterErrorDescription, every other broker annotation, delivery annotations,
footer, delivery count. Added: `x-requeue-count` (+1), `x-original-message-id`, `x-requeued-at`,
`x-original-sequence-number`; a parked copy keeps the count and carries `x-dead-letter-reason`/`-description`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from digest_dlq.message import (
    DEAD_LETTER_DESCRIPTION,
    DEAD_LETTER_REASON,
    ORIGINAL_MESSAGE_ID,
    ORIGINAL_SEQUENCE,
    PROPERTY_FIELDS,
    REQUEUE_COUNT,
    REQUEUED_AT,
    BodyType,
    DlqMessage,
    deep_text,
)

IdMode = Literal["preserve", "regenerate", "auto"]
MAX_ID_LENGTH = 128
KEPT_ANNOTATIONS = ("x-opt-partition-key", "x-opt-via-partition-key")
PARKED_REASON = "x-dead-letter-reason"
PARKED_DESCRIPTION = "x-dead-letter-description"
STRIPPED_PROPERTIES = frozenset({DEAD_LETTER_REASON, DEAD_LETTER_DESCRIPTION})


@dataclass(frozen=True)
class Copy:
    """Everything needed to build the outgoing `AmqpAnnotatedMessage` (see `bus.to_amqp`)."""

    source_sequence: int
    body_type: BodyType
    body: Any
    properties: dict[str, Any]
    application_properties: dict[str, Any]
    annotations: dict[str, Any] = field(default_factory=dict)
    time_to_live: float | None = None
    scheduled_enqueue_time: datetime.datetime | None = None

    @property
    def message_id(self) -> str | None:
        value = self.properties.get("message_id")
        return None if value is None else str(value)


def requeue_id(original: str, count: int) -> str:
    """Deterministic id of the `count`-th requeued copy: `{original}:rq{count}`, shortened to fit 128 chars."""
    suffix = f":rq{count}"
    if len(original) + len(suffix) <= MAX_ID_LENGTH:
        return original + suffix
    import hashlib

    digest = hashlib.sha256(original.encode()).hexdigest()[:16]
    return original[: MAX_ID_LENGTH - len(suffix) - 17] + "~" + digest + suffix


def choose_id(message: DlqMessage, mode: IdMode, target_dedupes: bool, count: int) -> str | None:
    """The copy's message id. `auto` regenerates only when the target has duplicate detection (a kept id would be
    dropped silently inside the window); regenerated ids are deterministic so a rerun after a crash is deduplicated."""
    original = message.original_message_id
    if mode == "preserve" or (mode == "auto" and not target_dedupes):
        return message.message_id
    if original is None:
        original = f"seq-{message.sequence_number}"
    return requeue_id(original, count)


def build_copy(
    message: DlqMessage, *, id_mode: IdMode = "auto", target_dedupes: bool = False, now: datetime.datetime,
    scheduled_enqueue_time: datetime.datetime | None = None, count_requeue: bool = True,
) -> Copy:
    """The copy sent back to a queue (`count_requeue`) or to the park queue (count unchanged)."""
    count = message.requeue_count + (1 if count_requeue else 0)
    props = {k: message.properties[k] for k in PROPERTY_FIELDS if message.properties.get(k) is not None}
    new_id = choose_id(message, id_mode, target_dedupes, count) if count_requeue else message.message_id
    if new_id is not None:
        props["message_id"] = new_id
    app = {k: v for k, v in message.application_properties.items() if k not in STRIPPED_PROPERTIES}
    original_id = message.original_message_id
    if original_id is not None:
        app[ORIGINAL_MESSAGE_ID] = original_id
    app[REQUEUE_COUNT] = count
    if count_requeue:
        app[REQUEUED_AT] = now.astimezone(datetime.UTC).isoformat()
    else:  # parked: keep why it was dead-lettered, under names no reader mistakes for the broker's
        app[PARKED_REASON] = message.reason
        app[PARKED_DESCRIPTION] = message.description
    app[ORIGINAL_SEQUENCE] = message.sequence_number
    annotations = {k: message.annotations[k] for k in KEPT_ANNOTATIONS if message.annotations.get(k) is not None}
    ttl = message.header.get("time_to_live")
    body: Any = message.body
    if message.body_type != "data":
        body = deep_text(body)  # the SDK decoded AMQP strings to bytes: send them back as strings
    return Copy(
        source_sequence=message.sequence_number, body_type=message.body_type, body=body, properties=props,
        application_properties=app, annotations=annotations,
        time_to_live=ttl / 1000 if isinstance(ttl, int) and ttl > 0 else None,
        scheduled_enqueue_time=scheduled_enqueue_time,
    )
