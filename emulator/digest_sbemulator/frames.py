"""AMQP 1.0 framing (spec part 2): frame headers, performatives, outcomes and the SASL exchange the SDK uses."""

from __future__ import annotations

import struct
from typing import Any

from digest_sbemulator.amqp import Described, Symbol, ULong, described_list

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


EMPTY_FRAME = frame(b"")
"""A heartbeat: a frame with no body."""
