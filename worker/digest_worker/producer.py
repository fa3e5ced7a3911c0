"""Digest requests for smoke and load tests: well-formed ones, and poison ones of every kind the worker must reject."""

from __future__ import annotations

import json
from typing import Any

POISON_KINDS = ("not_json", "wrong_type", "out_of_range", "non_utf8", "empty", "value_body", "sequence_body")


def request_body(request_id: str, conversation_id: str, *, days: int = 7, max_items: int = 10,
                 owner: str | None = None, title: str | None = None) -> bytes:
    body: dict[str, Any] = {"request_id": request_id, "conversation_id": conversation_id,
                            "date_range_days": days, "max_items": max_items}
    if owner:
        body["owner"] = owner
    if title:
        body["title"] = title
    return json.dumps(body).encode()


def poison(kind: str, request_id: str, conversation_id: str) -> dict[str, Any]:
    """Keyword arguments for `AmqpAnnotatedMessage` (data_body / value_body / sequence_body)."""
    good = {"request_id": request_id, "conversation_id": conversation_id}
    if kind == "not_json":
        return {"data_body": b"this is not json"}
    if kind == "wrong_type":
        return {"data_body": json.dumps({**good, "max_items": "ten"}).encode()}
    if kind == "out_of_range":
        return {"data_body": json.dumps({**good, "date_range_days": 365}).encode()}
    if kind == "non_utf8":
        return {"data_body": b'{"conversation_id": "\xff\xfe"}'}
    if kind == "empty":
        return {"data_body": b""}
    if kind == "value_body":
        return {"value_body": 42}
    if kind == "sequence_body":
        return {"sequence_body": [[1, 2, 3]]}
    raise ValueError(f"unknown poison kind {kind!r}; one of {', '.join(POISON_KINDS)}")
