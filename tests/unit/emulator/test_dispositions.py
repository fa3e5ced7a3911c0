"""The fast readers of client dispositions agree with the generic decoder, and with what the SDK really sends."""

from __future__ import annotations

from typing import Any

import pytest
from azure.servicebus._pyamqp._encode import encode_frame
from azure.servicebus._pyamqp.outcomes import Accepted, Rejected
from azure.servicebus._pyamqp.performatives import DispositionFrame

from digest_sbemulator import amqp, frames
from digest_sbemulator.amqp import Described, UInt


def _sdk_frame(channel: int, **fields: Any) -> bytes:
    """A disposition frame as the SDK's own encoder writes it."""
    header, body = encode_frame(DispositionFrame(**fields))  # size, data offset and type: the session adds the channel
    return header + channel.to_bytes(2, "big") + (body or b"")


def _generic(body: bytes) -> tuple[bool, int, int, bool, int | None]:
    value, _ = amqp.decode_value(body, 0)
    fields = value.value
    first = int(fields[1])
    last = first if len(fields) < 3 or fields[2] is None else int(fields[2])
    settled = bool(fields[3]) if len(fields) > 3 and fields[3] is not None else False
    state = frames.code_of(fields[4]) if len(fields) > 4 else None
    return bool(fields[0]), first, last, settled, state


@pytest.mark.parametrize("delivery_id", [0, 7, 255, 256, 70_000, 2**32 - 1])
@pytest.mark.parametrize("settled", [False, True])
def test_what_the_sdk_sends_to_complete_is_read_fast_and_alike(delivery_id: int, settled: bool) -> None:
    frame = _sdk_frame(3, role=True, first=delivery_id, last=None, settled=settled, state=Accepted(),
                       batchable=None)
    body = frame[8:]
    assert frames.plain_disposition(body) == _generic(body) == (True, delivery_id, delivery_id, settled,
                                                                  frames.ACCEPTED)
    match = frames.SDK_COMPLETE(frame)
    if settled:  # a pre-settled completion needs no echo: it is left to the general path
        assert match is None
    else:
        assert match is not None
        channel, encoded_id = match.groups()
        assert int.from_bytes(channel, "big") == 3
        assert amqp.decode_value(encoded_id, 0)[0] == delivery_id


@pytest.mark.parametrize("fields", [
    [True, UInt(4)],  # only the required fields
    [True, UInt(4), UInt(9), False, Described(amqp.ULong(frames.RELEASED), [])],
    [True, UInt(0), None, True, None],
    [False, UInt(300), UInt(300), True, Described(amqp.ULong(frames.ACCEPTED), []), True],
])
def test_other_encodings_the_fast_reader_accepts_agree_with_the_generic_decoder(fields: list[Any]) -> None:
    body = frames.performative(frames.DISPOSITION, fields)[8:]
    assert frames.plain_disposition(body) == _generic(body)
    assert frames.SDK_COMPLETE(frames.performative(frames.DISPOSITION, fields)) is None


def test_outcomes_with_fields_and_other_frames_are_left_to_the_generic_decoder() -> None:
    rejected = _sdk_frame(0, role=True, first=1, last=None, settled=False,
                          state=Rejected(error=None), batchable=None)
    assert frames.SDK_COMPLETE(rejected) is None
    modified = frames.performative(frames.DISPOSITION, [True, UInt(1), None, False,
                                                        Described(amqp.ULong(frames.MODIFIED), [True, True])])
    assert frames.plain_disposition(modified[8:]) is None
    flow = frames.performative(frames.FLOW, [UInt(0), UInt(10), UInt(0), UInt(10)])
    assert frames.plain_disposition(flow[8:]) is None
    truncated = _sdk_frame(0, role=True, first=1, last=None, settled=False, state=Accepted(), batchable=None)
    assert frames.plain_disposition(truncated[8:-1]) is None
    assert frames.SDK_COMPLETE(truncated[:-1]) is None


@pytest.mark.parametrize("delivery_id", [0, 200, 70_000])
def test_the_echo_of_a_fast_completion_is_the_generic_settled_disposition(delivery_id: int) -> None:
    match = frames.SDK_COMPLETE(_sdk_frame(258, role=True, first=delivery_id, last=None, settled=False,
                                           state=Accepted(), batchable=None))
    assert match is not None
    assert frames.accepted_echo(*match.groups()) == frames.settled_disposition_frame(
        258, False, delivery_id, frames.ACCEPTED_OUTCOME)
