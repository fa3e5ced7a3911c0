"""AMQP 1.0 framing (spec part 2): frame headers, performatives, outcomes and the SASL exchange the SDK uses."""

from __future__ import annotations

import re
import struct
from typing import Any

from digest_sbemulator.amqp import Described, Raw, Symbol, UInt, ULong, described_list, encode, uint_bytes

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
ACCEPTED_OUTCOME = _PLAIN_OUTCOMES[ACCEPTED]
"""The encoded `accepted` outcome: `Broker.settle` answers a completion with this very object."""


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


def transfer_head(channel: int, handle: int, delivery_id: int, tag: bytes, settled: bool, payload_size: int) -> bytes:
    """The first (and usually only) transfer frame of a delivery up to its payload, encoded without the generic
    encoder (the hot path of every receive): handle, delivery-id, delivery-tag (< 256 bytes), message-format 0,
    settled."""
    fields = b"%s%s\xa0%c%s\x43%s" % (uint_bytes(handle), uint_bytes(delivery_id), len(tag), tag,
                                         b"\x41" if settled else b"\x42")
    return b"%s\x00\x53\x14\xc0%c\x05%s" % (
        _header.pack(HEADER_SIZE + len(fields) + 6 + payload_size, 2, AMQP_FRAME, channel), len(fields) + 1, fields)


def transfer_frame(channel: int, handle: int, delivery_id: int, tag: bytes, settled: bool, payload: bytes) -> bytes:
    return transfer_head(channel, handle, delivery_id, tag, settled, len(payload)) + payload


def settled_disposition_frame(channel: int, role_receiver: bool, delivery_id: int, state: bytes) -> bytes:
    """A settled disposition of one delivery with an encoded outcome (the hot path of every settlement)."""
    fields = b"%s%s\x40\x41%s" % (b"\x41" if role_receiver else b"\x42", uint_bytes(delivery_id), state)
    if len(fields) + 1 > 255:
        return performative(DISPOSITION, [role_receiver, UInt(delivery_id), None, True, Raw(state)], channel)
    body = b"\x00\x53\x15\xc0%c\x05%s" % (len(fields) + 1, fields)
    return _header.pack(HEADER_SIZE + len(body), 2, AMQP_FRAME, channel) + body


EMPTY_FRAME = frame(b"")
"""A heartbeat: a frame with no body."""


class _NotPlain(Exception):
    """The disposition uses an encoding the fast parser does not read: decode it generically."""


_BOOLS = {0x41: True, 0x42: False, 0x40: None}


def _bool(body: bytes, pos: int) -> tuple[bool | None, int]:
    code = body[pos]
    if code == 0x56:
        return body[pos + 1] == 1, pos + 2
    if code in _BOOLS:
        return _BOOLS[code], pos + 1
    raise _NotPlain


def _uint_at(body: bytes, pos: int) -> tuple[int | None, int]:
    code = body[pos]
    if code == 0x52:
        return body[pos + 1], pos + 2
    if code == 0x70:
        return int.from_bytes(body[pos + 1:pos + 5], "big"), pos + 5
    if code == 0x43:
        return 0, pos + 1
    if code == 0x40:
        return None, pos + 1
    raise _NotPlain


def _plain_outcome(body: bytes, pos: int) -> tuple[int | None, int]:
    """An outcome without fields (`0x00 0x53 code` + an empty list), or null."""
    if body[pos] == 0x40:
        return None, pos + 1
    if body[pos] == 0x00 and body[pos + 1] == 0x53:
        code = body[pos + 2]
        if body[pos + 3] == 0x45:
            return code, pos + 4
        if body[pos + 3:pos + 6] == b"\xc0\x01\x00":
            return code, pos + 6
    raise _NotPlain


def plain_disposition(body: bytes) -> tuple[bool, int, int, bool, int | None] | None:
    """Role (receiver?), first, last, settled and outcome code of a disposition frame body whose outcome carries no
    fields (what the SDK sends to complete a message), read without the generic decoder; None for any other frame
    or encoding (decode it generically)."""
    if body[:4] != b"\x00\x53\x15\xc0" or len(body) < 7:
        return None
    count, pos = body[5], 6
    if body[4] != len(body) - 5 or count < 2:
        return None
    try:
        role, pos = _bool(body, pos)
        first, pos = _uint_at(body, pos)
        last, settled, state = first, False, None
        if count > 2:
            value, pos = _uint_at(body, pos)
            last = first if value is None else value
        if count > 3:
            flag, pos = _bool(body, pos)
            settled = bool(flag)
        if count > 4:
            state, pos = _plain_outcome(body, pos)
        if count > 5:
            _, pos = _bool(body, pos)  # batchable
    except (_NotPlain, IndexError):
        return None
    if count > 6 or pos != len(body) or first is None:
        return None
    return bool(role), first, last if last is not None else first, settled, state


SDK_COMPLETE = re.compile(
    rb"\x00\x00\x00.\x02\x00(..)"  # frame header: size (< 256: check it), doff 2, AMQP, channel
    rb"\x00\x53\x15\xc0.\x06"  # disposition, a list8 of 6 fields
    rb"\x56\x01(\x43|\x52.|\x70....)\x40\x56\x00"  # role receiver, first (uint), last null, settled false
    rb"\x00\x53\x24\x45\x40",  # accepted, batchable null
    re.DOTALL).fullmatch
"""One whole frame exactly as the SDK completes one delivery (groups: channel, encoded delivery id): what most of a
receiver's traffic is. Any other form of a disposition is read by `plain_disposition` or the generic decoder."""


def accepted_echo(channel: bytes, encoded_id: bytes) -> bytes:
    """The settled `accepted` disposition answering `SDK_COMPLETE` (its encoded channel and delivery id)."""
    return b"\x00\x00\x00%c\x02\x00%s\x00\x53\x15\xc0%c\x05\x42%s\x40\x41\x00\x53\x24\x45" % (
        len(encoded_id) + 21, channel, len(encoded_id) + 8, encoded_id)
