"""A dead-lettered message as plain data: normalised once from what the SDK decoded, used by every pure module.

The SDK hands application-property keys and string values back as `bytes`, property fields as `bytes`, timestamps as
int milliseconds and DATA/SEQUENCE bodies as generators. `from_received` fixes all of that in one place.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

BodyType = Literal["data", "sequence", "value"]

DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"
REQUEUE_COUNT = "x-requeue-count"
ORIGINAL_MESSAGE_ID = "x-original-message-id"
REQUEUED_AT = "x-requeued-at"
ORIGINAL_SEQUENCE = "x-original-sequence-number"

# AMQP `properties` fields the copy keeps (creation/expiry times are recomputed by the SDK on send).
PROPERTY_FIELDS = (
    "message_id", "user_id", "to", "subject", "reply_to", "correlation_id", "content_type", "content_encoding",
    "group_id", "group_sequence", "reply_to_group_id",
)


def text(value: Any) -> Any:
    """bytes that are UTF-8 → str (the SDK decodes AMQP string, symbol and binary all to bytes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return value


def deep_text(value: Any) -> Any:
    """`text` applied through lists and maps (VALUE and SEQUENCE bodies)."""
    if isinstance(value, dict):
        return {deep_text(k): deep_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [deep_text(v) for v in value]
    return text(value)


def normalise_properties(raw: dict[Any, Any] | None) -> dict[str, Any]:
    """Application properties with str keys and str string values."""
    return {str(text(k)): text(v) for k, v in (raw or {}).items()}


@dataclass(frozen=True)
class DlqMessage:
    """What the toolkit knows about one dead-lettered message."""

    sequence_number: int
    message_id: str | None
    enqueued_time: datetime.datetime | None
    delivery_count: int | None
    body_type: BodyType
    body: Any
    """DATA: list[bytes] (one item per data section); SEQUENCE: list[list]; VALUE: any AMQP value."""
    properties: dict[str, Any] = field(default_factory=dict)
    """AMQP properties (PROPERTY_FIELDS plus creation_time/absolute_expiry_time), str where textual."""
    application_properties: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    """Approximate size in bytes (body plus properties)."""

    @property
    def reason(self) -> str:
        return str(self.application_properties.get(DEAD_LETTER_REASON) or "")

    @property
    def description(self) -> str:
        return str(self.application_properties.get(DEAD_LETTER_DESCRIPTION) or "")

    @property
    def subject(self) -> str | None:
        value = self.properties.get("subject")
        return None if value is None else str(value)

    @property
    def session_id(self) -> str | None:
        value = self.properties.get("group_id")
        return None if value is None else str(value)

    @property
    def partition_key(self) -> str | None:
        value = self.annotations.get("x-opt-partition-key")
        return None if value is None else str(value)

    @property
    def requeue_count(self) -> int:
        return parse_count(self.application_properties.get(REQUEUE_COUNT))

    @property
    def original_message_id(self) -> str | None:
        value = self.application_properties.get(ORIGINAL_MESSAGE_ID)
        return str(value) if value is not None else self.message_id

    @property
    def requeued_at(self) -> datetime.datetime | None:
        return parse_time(self.application_properties.get(REQUEUED_AT))

    def age(self, now: datetime.datetime) -> datetime.timedelta | None:
        return None if self.enqueued_time is None else now - self.enqueued_time

    def body_bytes(self) -> bytes:
        """A canonical byte form of the body (for hashing and sizing)."""
        if self.body_type == "data":
            return b"".join(self.body)
        return json.dumps(encode_value(self.body), sort_keys=True, separators=(",", ":")).encode()

    def body_hash(self) -> str:
        return hashlib.sha256(self.body_type.encode() + b"\0" + self.body_bytes()).hexdigest()


def parse_count(value: Any) -> int:
    """`x-requeue-count` as written by any version of the toolkit (int or decimal string); garbage counts as 0."""
    value = text(value)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def parse_time(value: Any) -> datetime.datetime | None:
    value = text(value)
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, int) and not isinstance(value, bool):  # AMQP timestamp, ms
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    return None


def encode_value(value: Any) -> Any:
    """An AMQP value as JSON, losslessly for the types the SDK decodes (bytes, timestamps, UUIDs, maps with
    non-string keys). Inverse: `decode_value`."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        import base64

        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode_value(v) for k, v in value.items()}
        return {"$map": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    return {"$repr": repr(value)}


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$bytes":
                import base64

                return base64.b64decode(inner)
            if key == "$datetime":
                return datetime.datetime.fromisoformat(inner)
            if key == "$uuid":
                return uuid.UUID(inner)
            if key == "$map":
                return {_hashable(decode_value(k)): decode_value(v) for k, v in inner}
            if key == "$repr":
                return inner
        return {k: decode_value(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
