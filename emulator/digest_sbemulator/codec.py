"""AMQP 1.0 message sections on the wire: split what a client sent, re-encode only header and annotations.

The stored form of a message is the client's own bytes from the properties section on (properties, application
properties, body sections, footer), so typed ids, several data sections, VALUE and SEQUENCE bodies survive exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import proton
from proton import Data, Described, symbol, ulong

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
SEQUENCE = 0x76
VALUE = 0x77
FOOTER = 0x78
_SECTION_CODES = range(HEADER, FOOTER + 1)


class CodecError(ValueError):
    """Bytes that are not a sequence of AMQP message sections."""


@dataclass
class Sections:
    header: list[Any] = field(default_factory=list)
    message_annotations: dict[Any, Any] = field(default_factory=dict)
    properties: list[Any] = field(default_factory=list)
    application_properties: dict[Any, Any] = field(default_factory=dict)
    body_codes: list[int] = field(default_factory=list)
    data_sections: list[bytes] = field(default_factory=list)
    bare: bytes = b""
    """Encoded sections from properties on, exactly as received."""

    @property
    def message_id(self) -> Any:
        return self.properties[0] if self.properties else None

    @property
    def ttl_seconds(self) -> float | None:
        if len(self.header) > 2 and self.header[2] is not None:
            return int(self.header[2]) / 1000
        return None


def _own(value: Any) -> Any:
    """Proton hands out binary as memoryviews into its C buffer, which dangle once the Data is reused: copy."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {_own(k): _own(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_own(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, _own(value.value))
    return value


def _described(data: Data) -> tuple[int, Any]:
    data.rewind()
    if not data.next():
        raise CodecError("empty section")
    obj = data.get_object()
    if not isinstance(obj, Described):
        raise CodecError("a message section must be a described type")
    descriptor = obj.descriptor
    if not isinstance(descriptor, int):
        raise CodecError(f"unsupported section descriptor {descriptor!r}")
    return int(descriptor), _own(obj.value)


def raw_sections(raw: bytes) -> list[tuple[int, Any, bytes]]:
    """(descriptor code, decoded value, encoded bytes) of each section, in order."""
    result: list[tuple[int, Any, bytes]] = []
    data = Data()
    offset = 0
    while offset < len(raw):
        data.clear()
        try:
            size = data.decode(raw[offset:])
        except proton.DataException as exc:
            raise CodecError(f"undecodable section at byte {offset}: {exc}") from None
        if size <= 0:
            raise CodecError(f"undecodable section at byte {offset}")
        code, value = _described(data)
        if code not in _SECTION_CODES:
            raise CodecError(f"unknown section descriptor {code:#x}")
        result.append((code, value, raw[offset:offset + size]))
        offset += size
    return result


def split(raw: bytes) -> Sections:
    """Decode the sections of one encoded message."""
    sections = Sections()
    bare: list[bytes] = []
    for code, value, blob in raw_sections(raw):
        if code >= PROPERTIES:
            bare.append(blob)
        if code == HEADER:
            sections.header = list(value or [])
        elif code == MESSAGE_ANNOTATIONS:
            sections.message_annotations = dict(value or {})
        elif code == PROPERTIES:
            sections.properties = list(value or [])
        elif code == APPLICATION_PROPERTIES:
            sections.application_properties = dict(value or {})
        elif code in (DATA, SEQUENCE, VALUE):
            sections.body_codes.append(code)
            if code == DATA:
                sections.data_sections.append(bytes(value))
    sections.bare = b"".join(bare)
    return sections


def unpack_batch(sections: Sections) -> list[bytes] | None:
    """The messages of a batch transfer (one data section per encoded message, as `ServiceBusMessageBatch`
    sends them), or None when this is a single message.

    The transfer's message-format (0x80013700) is not visible through Proton's Python binding, so a batch is
    recognised by its shape: only data sections, each a complete, decodable sequence of message sections.
    """
    if not sections.body_codes or any(code != DATA for code in sections.body_codes):
        return None
    for blob in sections.data_sections:
        if len(blob) < 3 or blob[0] != 0x00 or blob[1] != 0x53 or blob[2] not in _SECTION_CODES:
            return None
        try:
            split(blob)
        except CodecError:
            return None
    return sections.data_sections


def _encode_described(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def encode_for_delivery(
    bare: bytes, *, delivery_count: int, ttl_ms: int | None, annotations: dict[Any, Any],
    application_properties: dict[str, Any] | None = None,
) -> bytes:
    """Header + message annotations (server-written) + the stored bare message.

    `application_properties`, when given, are merged into the client's section (the broker adds
    DeadLetterReason and DeadLetterErrorDescription that way, as the service does).
    """
    header = [True, None, proton.uint(ttl_ms) if ttl_ms is not None else None, None, proton.uint(delivery_count)]
    out = [_encode_described(HEADER, header)]
    if annotations:
        out.append(_encode_described(
            MESSAGE_ANNOTATIONS, {symbol(k) if isinstance(k, str) else k: v for k, v in annotations.items()}))
    if not application_properties:
        return b"".join(out) + bare
    merged: dict[Any, Any] = dict(application_properties)
    inserted = False
    for code, value, blob in raw_sections(bare):
        if code == APPLICATION_PROPERTIES:
            merged = {**dict(value or {}), **application_properties}
            continue
        if code > APPLICATION_PROPERTIES and not inserted:
            out.append(_encode_described(APPLICATION_PROPERTIES, merged))
            inserted = True
        out.append(blob)
    if not inserted:
        out.append(_encode_described(APPLICATION_PROPERTIES, merged))
    return b"".join(out)


def lock_token_tag(token: uuid.UUID) -> bytes:
    """The delivery tag the SDK turns into the lock token: `uuid.UUID(bytes_le=tag)`."""
    return token.bytes_le
