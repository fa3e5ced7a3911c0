"""Normalise a received message body once, across AMQP body types, into bytes or a JSON-like dict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from digest_worker.request import MAX_BODY_BYTES, InvalidMessage

DATA, SEQUENCE, VALUE = "data", "sequence", "value"
JSON_TYPES = ("application/json",)


def normalise(body_type: str, body: Any, content_type: str | None = None) -> bytes | dict[str, Any]:
    """One pass over the body. `body_type` is the SDK's `AmqpMessageBodyType` value (`data`/`sequence`/`value`).

    DATA: one or more sections, joined. VALUE: bytes or str (JSON text) or a map (keys and strings decoded).
    SEQUENCE and other VALUE types are not a digest request.
    """
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media not in JSON_TYPES:
            raise InvalidMessage("content_type", f"{content_type!r} is not application/json")
    if body_type == DATA:
        return _join(body)
    if body_type == VALUE:
        if isinstance(body, bytes | bytearray | memoryview):
            return bytes(body)
        if isinstance(body, str):
            return body.encode("utf-8")
        if isinstance(body, Mapping):
            return {str(k): v for k, v in _decode(body).items()}
        raise InvalidMessage("body", f"an AMQP value body of type {type(body).__name__} is not a JSON object")
    if body_type == SEQUENCE:
        raise InvalidMessage("body", "AMQP sequence bodies are not supported; send JSON in a data body")
    raise InvalidMessage("body", f"unknown AMQP body type {body_type!r}")


def _join(sections: Any) -> bytes:
    if sections is None:
        return b""
    if isinstance(sections, bytes | bytearray | memoryview):
        return bytes(sections)
    if isinstance(sections, str):
        return sections.encode("utf-8")
    parts: list[bytes] = []
    size = 0
    for section in sections if isinstance(sections, Iterable) else [sections]:
        part = section.encode("utf-8") if isinstance(section, str) else bytes(section)
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise InvalidMessage("body", f"more than {MAX_BODY_BYTES} bytes; a digest request is small")
        parts.append(part)
    return b"".join(parts)


def _decode(value: Any) -> Any:
    """The SDK decodes AMQP strings and symbols as bytes: turn them (and map keys) back into str."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("body", "a string in the AMQP value body is not UTF-8") from None
    if isinstance(value, Mapping):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    return value
