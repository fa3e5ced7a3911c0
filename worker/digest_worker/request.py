"""The digest request message contract: parsed once from the normalised body."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

MAX_BODY_BYTES = 64 * 1024
"""A digest request is a few hundred bytes; anything this large is not one."""

NonEmpty = Annotated[StrictStr, Field(min_length=1, max_length=1024)]


class DigestRequest(BaseModel):
    """A request to post one digest into a Teams conversation (JSON, content type `application/json`).

    Unknown fields are ignored; wrong types and out-of-range values are a permanent error (dead-lettered).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    """Idempotency key; defaults to the Service Bus message id."""
    conversation_id: NonEmpty
    """Teams conversation to post into (a stored conversation reference)."""
    date_range_days: Annotated[StrictInt, Field(ge=1, le=90)] = 7
    """Digest covers items created in the last N days."""
    max_items: Annotated[StrictInt, Field(ge=1, le=50)] = 10
    """At most this many items, highest score first."""
    owner: NonEmpty | None = None
    """Only items of this owner."""
    audience: NonEmpty | None = None
    """Only items for this audience."""
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    """Card title; a default names the date range."""


class InvalidMessage(Exception):
    """The message can never be processed; `field` names what is wrong (`body`, `date_range_days`, ...)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def decode_json(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """Bytes → JSON object; a dict passes through. Raises `InvalidMessage` naming `body`."""
    if isinstance(body, dict):
        return body
    if not body:
        raise InvalidMessage("body", "empty")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidMessage("body", f"{len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit of a digest request")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("body", f"not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage("body", f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InvalidMessage("body", f"a JSON object is required, got {type(data).__name__}")
    return data


def parse_request(body: bytes | dict[str, Any], message_id: str | None) -> DigestRequest:
    """Normalised body → `DigestRequest`, or `InvalidMessage` naming every wrong field."""
    data = decode_json(body)
    if "request_id" not in data and message_id:
        data = {**data, "request_id": message_id}
    try:
        return DigestRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        fields = [".".join(str(p) for p in err["loc"]) or "body" for err in errors]
        detail = "; ".join(f"{f}: {err['msg']}" for f, err in zip(fields, errors, strict=True))
        raise InvalidMessage(fields[0], detail[:1024]) from None
