"""The AMQP type codec and frame encoders: typed round trips, and interop with the SDK's own decoder (pyamqp)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.servicebus._pyamqp._decode import _DECODE_BY_CONSTRUCTOR, decode_frame

from digest_sbemulator import amqp, frames
from digest_sbemulator.amqp import (
    Array,
    Byte,
    Char,
    Decimal,
    Described,
    Float,
    Int,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

VALUES: list[Any] = [
    None, True, False, UByte(200), UShort(60000), UInt(0), UInt(7), UInt(4_000_000_000), ULong(0), ULong(9),
    ULong(2**64 - 1), Byte(-5), Short(-3000), Int(-100), Int(2_000_000), 7, -(2**63), 2**63 - 1, Float(1.5),
    3.25, Char("λ"), Timestamp(1_700_000_000_123), uuid.UUID(int=42), b"", b"\x00" * 300, "", "é" * 200,
    Symbol("x-opt-sequence-number"), Symbol("s" * 300), Decimal(0x74, b"\x01\x02\x03\x04"),
    Decimal(0x94, bytes(range(16))), [], [1, "two", [3.0]], list(range(300)), {}, {"k": b"v", Symbol("n"): None},
    {str(i): i for i in range(200)}, Described(ULong(0x73), ["id", None, None]),
    Described(Symbol("com.example:thing"), {"a": 1}), Array(amqp.LONG, [1, -2, 3]),
    Array(amqp.SYM8, [Symbol("ANONYMOUS"), Symbol("PLAIN")]), Array(amqp.UUID, [uuid.UUID(int=1)]),
    Array(amqp.TIMESTAMP, [Timestamp(5)]), Array(amqp.UINT, []), Array(amqp.LIST32, [[1], ["a"]]),
    Array(amqp.MAP32, [{"k": 1}]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}")
def test_value_end_steps_over_a_value_exactly_where_decoding_ends(value: Any) -> None:
    encoded = amqp.encode(value) + b"\x40"  # something after it
    assert amqp.value_end(encoded, 0) == amqp.decode_value(encoded, 0)[1] == len(encoded) - 1
    with pytest.raises(amqp.DecodeError):
        amqp.value_end(encoded[:-2], 0) if len(encoded) > 2 else amqp.value_end(b"\xa1\x05ab", 0)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}")
def test_values_round_trip_with_their_amqp_type(value: Any) -> None:
    encoded = amqp.encode(value)
    decoded, end = amqp.decode_value(encoded)
    assert end == len(encoded)
    assert decoded == value
    assert type(decoded) is type(value)
    assert amqp.encode(decoded) == encoded


@pytest.mark.parametrize("value", [v for v in VALUES if not isinstance(v, Decimal | Char | Described | Array)],
                         ids=lambda v: f"{type(v).__name__}")
def test_the_sdk_decodes_what_the_emulator_encodes(value: Any) -> None:
    encoded = memoryview(amqp.encode(value))
    rest, decoded = _DECODE_BY_CONSTRUCTOR[encoded[0]](encoded[1:])
    assert len(rest) == 0
    assert decoded == _as_sdk_sees(value)


def _as_sdk_sees(value: Any) -> Any:
    """pyamqp decodes strings and symbols as bytes."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_as_sdk_sees(v) for v in value]
    if isinstance(value, dict):
        return {_as_sdk_sees(k): _as_sdk_sees(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("handle", "delivery_id", "settled"), [(0, 0, False), (3, 255, True), (300, 70_000, False)])
def test_hand_encoded_transfer_frames_are_what_the_sdk_reads(handle: int, delivery_id: int, settled: bool) -> None:
    tag = uuid.uuid4().bytes_le
    frame = frames.transfer_frame(5, handle, delivery_id, tag, settled, b"payload")
    size, doff, kind, channel = frames.unpack_header(frame)
    assert (size, doff, kind, channel) == (len(frame), 2, 0, 5)
    code, fields = decode_frame(memoryview(frame)[8:])
    assert code == frames.TRANSFER
    assert fields[:5] == [handle, delivery_id, tag, 0, settled]
    assert fields[-1] == b"payload"  # pyamqp appends the payload to the performative's fields
    generic = frames.performative(frames.TRANSFER, [UInt(handle), UInt(delivery_id), tag, UInt(0), settled], 5,
                                  b"payload")
    assert frame == generic


@pytest.mark.parametrize("state", [frames.outcome(frames.ACCEPTED), frames.outcome(frames.RELEASED),
                                   frames.outcome(frames.REJECTED, [frames.error("com.microsoft:message-lock-lost",
                                                                                 "gone " * 80)])])
def test_hand_encoded_dispositions_match_the_generic_encoder(state: Described) -> None:
    frame = frames.settled_disposition_frame(2, False, 1234, frames.encoded_outcome(state))
    generic = frames.performative(frames.DISPOSITION, [False, UInt(1234), None, True, state], 2)
    assert frame == generic
    code, fields = decode_frame(memoryview(frame)[8:])
    assert (code, fields[:4]) == (frames.DISPOSITION, [False, 1234, None, True])


@pytest.mark.parametrize(("raw", "problem"), [
    (b"", "truncated"), (b"\xa1\x05ab", "truncated"), (b"\x02", "unknown constructor"),
    (b"\xa1\x02\xff\xfe", "invalid UTF-8"), (b"\xc0\x03\x02\x41", "truncated"),
    (b"\xc1\x02\x01\x41", "even number"), (b"\xc0\x04\x01\x41\x42\x42", "does not match"),
])
def test_malformed_input_is_a_decode_error(raw: bytes, problem: str) -> None:
    with pytest.raises(amqp.DecodeError, match=problem):
        amqp.decode_value(raw)


def test_unknown_python_types_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot encode object"):
        amqp.encode(object())


def test_trailing_nulls_are_trimmed_from_described_lists() -> None:
    assert amqp.described_list(0x10, ["c", None, None]) == amqp.encode(Described(ULong(0x10), ["c"]))
    assert frames.field(["a"], 3, "default") == "default"
