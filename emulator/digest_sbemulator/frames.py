"""AMQP 1.0 framing (spec part 2): frame headers, performatives, outcomes and the SASL exchange the SDK uses."""

from __future__ import annotations

import struct
from typing import Any

from digest_sbemulator.amqp import Described, Raw, Symbol, UInt, ULong, described_list, encode

PROTOCOL_SASL = b"AMQP\x03\x01\x00\x00"
PROTOCOL_AMQP = b"AMQP\x00\x01\x00\x00"
HEADER_SIZE = 8
AMQP_FRAME, SASL_FRAME = 0, 1

OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
ERROR = 0x1D
RECEIVED, ACCEPTED, REJECTED, RELEASED, MODIFIED = range(0x23, 0x28)
SOURCE, TARGET = 0x28, 0x29
SASL_MECHANISMS, SASL_INIT, SASL_CHALLENGE, SASL_RESPONSE, SASL_OUTCOME = range(0x40, 0x45)

_header = struct.Struct(">IBBH")
unpack_header = _header.unpack_from


def frame(body: bytes, channel: int = 0, kind: int = AMQP_FRAME) -> bytes:
    return _header.pack(HEADER_SIZE + len(body), 2, kind, channel) + body


def performative(code: int, fields: list[Any], channel: int = 0, payload: bytes = b"",
                 kind: int = AMQP_FRAME) -> bytes:
    return frame(described_list(code, fields) + payload, channel, kind)


def error(condition: str, description: str | None = None, info: dict[Any, Any] | None = None) -> Described:
    return Described(ULong(ERROR), [Symbol(condition), description, info])


def outcome(code: int, fields: list[Any] | None = None) -> Described:
    return Described(ULong(code), fields or [])


_PLAIN_OUTCOMES = {code: encode(outcome(code)) for code in (ACCEPTED, REJECTED, RELEASED)}


def encoded_outcome(state: Described) -> bytes:
    """The encoding of an outcome; the field-less ones (the common case) are encoded once."""
    if not state.value and isinstance(state.descriptor, int):
        cached = _PLAIN_OUTCOMES.get(int(state.descriptor))
        if cached is not None:
            return cached
    return encode(state)


def code_of(value: Any) -> int | None:
    """The descriptor code of a described value (outcomes, termini), else None."""
    if isinstance(value, Described) and isinstance(value.descriptor, int):
        return int(value.descriptor)
    return None


def field(fields: list[Any], index: int, default: Any = None) -> Any:
    """A performative field; trailing fields may be absent on the wire."""
    if index < len(fields):
        value = fields[index]
        return default if value is None else value
    return default


_uint32 = struct.Struct(">I").pack


def _uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 256:
        return bytes((0x52, value))
    return b"\x70" + _uint32(value)


def transfer_frame(channel: int, handle: int, delivery_id: int, tag: bytes, settled: bool, payload: bytes) -> bytes:
    """The first (and usually only) transfer frame of a delivery, encoded without the generic encoder (the hot
    path of every receive): handle, delivery-id, delivery-tag (< 256 bytes), message-format 0, settled."""
    fields = b"%s%s\xa0%c%s\x43%s" % (_uint(handle), _uint(delivery_id), len(tag), tag,
                                         b"\x41" if settled else b"\x42")
    body = b"\x00\x53\x14\xc0%c\x05%s" % (len(fields) + 1, fields)
    return _header.pack(HEADER_SIZE + len(body) + len(payload), 2, AMQP_FRAME, channel) + body + payload


def settled_disposition_frame(channel: int, role_receiver: bool, delivery_id: int, state: bytes) -> bytes:
    """A settled disposition of one delivery with an encoded outcome (the hot path of every settlement)."""
    fields = b"%s%s\x40\x41%s" % (b"\x41" if role_receiver else b"\x42", _uint(delivery_id), state)
    if len(fields) + 1 > 255:
        return performative(DISPOSITION, [role_receiver, UInt(delivery_id), None, True, Raw(state)], channel)
    body = b"\x00\x53\x15\xc0%c\x05%s" % (len(fields) + 1, fields)
    return _header.pack(HEADER_SIZE + len(body), 2, AMQP_FRAME, channel) + body


EMPTY_FRAME = frame(b"")
"""A heartbeat: a frame with no body."""
