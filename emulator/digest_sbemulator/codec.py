"""AMQP 1.0 message sections on the wire: split what a client sent, re-encode only header and annotations.

The stored form of a message is the client's own bytes from the properties section on (properties, application
properties, body sections, footer), so typed ids, several data sections, VALUE and SEQUENCE bodies survive exactly.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field
from typing import Any

from digest_sbemulator import amqp
from digest_sbemulator.amqp import Described, Symbol

BATCH_MESSAGE_FORMAT = 0x80013700
"""The transfer message-format of a `ServiceBusMessageBatch`: one data section per encoded message."""

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
    body_value: Any = None
    """The decoded amqp-value body, if any."""
    bare: bytes = b""
    """Encoded sections from properties on, exactly as received."""

    @property
    def message_id(self) -> Any:
        return self.properties[0] if self.properties else None

    @property
    def reply_to(self) -> Any:
        return self.properties[4] if len(self.properties) > 4 else None

    @property
    def ttl_seconds(self) -> float | None:
        if len(self.header) > 2 and self.header[2] is not None:
            return int(self.header[2]) / 1000
        return None


_DECODED = frozenset({HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES})
"""What a lazy `split` decodes: everything else is only located."""


def raw_sections(raw: bytes, decode: frozenset[int] | None = None) -> list[tuple[int, Any, int, int]]:
    """(descriptor code, decoded value, start, end) of each section, in order; the sections whose codes are not
    in `decode` (default: all) are only located, their value None."""
    result: list[tuple[int, Any, int, int]] = []
    offset = 0
    while offset < len(raw):
        try:
            if raw[offset] != 0x00:
                raise CodecError(f"a message section must be a described type (byte {offset})")
            descriptor, body = amqp.decode_value(raw, offset + 1)
            if not isinstance(descriptor, int) or int(descriptor) not in _SECTION_CODES:
                raise CodecError(f"unknown section descriptor {descriptor!r}")
            code = int(descriptor)
            if decode is None or code in decode:
                value, end = amqp.decode_value(raw, body)
            else:
                value, end = None, amqp.value_end(raw, body)
        except amqp.DecodeError as exc:
            raise CodecError(f"undecodable section at byte {offset}: {exc}") from None
        result.append((code, value, offset, end))
        offset = end
    return result


def _binary(raw: bytes, start: int, end: int) -> bytes:
    """The content of the data section `raw[start:end]` (a described binary), sliced out without decoding."""
    at = amqp.value_end(raw, start + 1)  # past the descriptor
    if raw[at] == 0xA0:
        return raw[at + 2:end]
    if raw[at] == 0xB0:
        return raw[at + 5:end]
    raise CodecError(f"a data section must hold binary (byte {start})")


def split(raw: bytes, *, lazy: bool = False) -> Sections:
    """The sections of one encoded message. `lazy`: application properties and body values are not decoded (a
    queue stores them as they are; data sections are still sliced out, a batch's messages are its data sections)."""
    sections = Sections()
    bare: list[tuple[int, int]] = []
    for code, value, start, end in raw_sections(raw, _DECODED if lazy else None):
        if code >= PROPERTIES:
            bare.append((start, end))
        if code == HEADER:
            sections.header = list(value or [])
        elif code == MESSAGE_ANNOTATIONS:
            sections.message_annotations = dict(value or {})
        elif code == PROPERTIES:
            sections.properties = list(value or [])
        elif code == APPLICATION_PROPERTIES and value is not None:
            sections.application_properties = dict(value)
        elif code in (DATA, SEQUENCE, VALUE):
            sections.body_codes.append(code)
            if code == DATA:
                sections.data_sections.append(bytes(value) if value is not None else _binary(raw, start, end))
            elif code == VALUE:
                sections.body_value = value
    if bare and bare[-1][1] == len(raw) and all(a[1] == b[0] for a, b in itertools.pairwise(bare)):
        sections.bare = raw[bare[0][0]:]  # the usual case: one slice
    else:
        sections.bare = b"".join(raw[start:end] for start, end in bare)
    return sections


def unpack_batch(sections: Sections) -> list[bytes]:
    """The messages of a batch transfer (message-format 0x80013700): each data section is one encoded message."""
    if any(code != DATA for code in sections.body_codes):
        raise CodecError("a batch transfer must carry only data sections")
    return sections.data_sections


def encode_section(code: int, value: Any) -> bytes:
    return amqp.encode(Described(amqp.ULong(code), value))


_SYMBOL_KEYS: dict[str, bytes] = {}


def annotation_entries(annotations: dict[Any, Any]) -> bytes:
    """Encoded keys and values of message annotations (string keys are symbols), to be wrapped by
    `annotations_section`; key encodings are cached, every delivery writes the same few."""
    body = bytearray()
    for key, value in annotations.items():
        if type(key) is str:
            encoded_key = _SYMBOL_KEYS.get(key)
            if encoded_key is None:
                encoded_key = amqp.encode(Symbol(key))
                if len(_SYMBOL_KEYS) < 256:  # bounded: client-chosen keys must not grow it without end
                    _SYMBOL_KEYS[key] = encoded_key
            body += encoded_key
        else:
            amqp.encode_value(key, body)
        amqp.encode_value(value, body)
    return bytes(body)


def annotations_section(entries: bytes, count: int) -> bytes:
    """A message-annotations section from `count` encoded key/value pairs."""
    if len(entries) < 255 and count < 128:
        return b"\x00\x53\x72\xc1%c%c%s" % (len(entries) + 1, 2 * count, entries)
    return b"\x00\x53\x72\xd1" + _map32(len(entries) + 4, 2 * count) + entries


_map32 = struct.Struct(">II").pack
_int64 = struct.Struct(">q").pack
_LOCKED_UNTIL = amqp.encode(Symbol("x-opt-locked-until")) + b"\x83"


_SEQUENCE_NUMBER = amqp.encode(Symbol("x-opt-sequence-number")) + b"\x81"
_ENQUEUED_TIME = amqp.encode(Symbol("x-opt-enqueued-time")) + b"\x83"


def stamp_entries(sequence_number: int, enqueued_ms: int) -> bytes:
    """The `x-opt-sequence-number` (long) and `x-opt-enqueued-time` (timestamp) annotation entries."""
    return b"%s%s%s%s" % (_SEQUENCE_NUMBER, _int64(sequence_number), _ENQUEUED_TIME, _int64(enqueued_ms))


def locked_until_entry(milliseconds: int) -> bytes:
    """The `x-opt-locked-until` annotation entry (key and timestamp), written on every locked delivery."""
    return _LOCKED_UNTIL + _int64(milliseconds)


def delivery_sections(header_fields: bytes, entries: bytes, count: int, tail: bytes) -> bytes:
    """Header (its encoded fields) + message annotations (`count` encoded entries) + the rest, in one piece."""
    if len(entries) < 255 and count < 128 and len(header_fields) < 255:
        return b"\x00\x53\x70\xc0%c\x05%s\x00\x53\x72\xc1%c%c%s%s" % (
            len(header_fields) + 1, header_fields, len(entries) + 1, 2 * count, entries, tail)
    return b"\x00\x53\x70\xc0%c\x05%s%s%s" % (len(header_fields) + 1, header_fields,
                                                annotations_section(entries, count), tail)


_HEADER_FIELDS: dict[int | None, bytes] = {}


def header_fields(ttl_ms: int | None) -> bytes:
    """The header's fields up to its delivery count: durable, priority (null), ttl, first-acquirer (null). Most
    messages share their queue's default TTL: the encodings of a few TTLs are kept."""
    fields = _HEADER_FIELDS.get(ttl_ms)
    if fields is None:
        # a TTL past the uint range (~49 days) is capped
        fields = b"\x41\x40%s\x40" % (b"\x40" if ttl_ms is None else amqp.uint_bytes(min(ttl_ms, 0xFFFFFFFF)))
        if len(_HEADER_FIELDS) < 64:
            _HEADER_FIELDS[ttl_ms] = fields
    return fields


def with_application_properties(bare: bytes, application_properties: dict[str, Any]) -> bytes:
    """The bare message with `application_properties` merged into the client's section (the broker adds
    DeadLetterReason and DeadLetterErrorDescription that way, as the service does)."""
    merged: dict[Any, Any] = dict(application_properties)
    out: list[bytes] = []
    inserted = False
    for code, value, start, end in raw_sections(bare, frozenset({APPLICATION_PROPERTIES})):
        blob = bare[start:end]
        if code == APPLICATION_PROPERTIES:
            merged = {**dict(value or {}), **application_properties}
            continue
        if code > APPLICATION_PROPERTIES and not inserted:
            out.append(encode_section(APPLICATION_PROPERTIES, merged))
            inserted = True
        out.append(blob)
    if not inserted:
        out.append(encode_section(APPLICATION_PROPERTIES, merged))
    return b"".join(out)


def encode_for_delivery(
    bare: bytes, *, delivery_count: int, ttl_ms: int | None, annotations: dict[Any, Any],
    application_properties: dict[str, Any] | None = None,
) -> bytes:
    """Header + message annotations (server-written) + the stored bare message (with `application_properties`
    merged into the client's section, see `with_application_properties`). The server's deliveries are these same
    pieces, cached per message (`server._encode_stored`)."""
    tail = with_application_properties(bare, application_properties) if application_properties else bare
    return delivery_sections(header_fields(ttl_ms) + amqp.uint_bytes(delivery_count),
                             annotation_entries(annotations), len(annotations), tail)
