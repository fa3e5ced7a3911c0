"""Packing copies into send batches by encoded bytes, never by a fixed count.

A batch's envelope takes the first message's message id, session id and partition key, so consecutive copies with
different (session, partition key) start a new batch. A copy larger than the limit on its own is `oversize`: it is
never sent and its dead-lettered original is never completed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# ServiceBusMessageBatch adds 5 bytes per message below 256 bytes encoded, else 8 (azure-servicebus 7.15).
SMALL_OVERHEAD, LARGE_OVERHEAD = 5, 8
ENVELOPE_RESERVE = 64
"""Bytes kept free for the batch envelope (format code and properties copied from the first message)."""


def batch_cost(encoded_size: int) -> int:
    return encoded_size + (SMALL_OVERHEAD if encoded_size < 256 else LARGE_OVERHEAD)


@dataclass
class Packing(Generic[T]):
    batches: list[list[T]] = field(default_factory=list)
    oversize: list[T] = field(default_factory=list)


def pack(items: Sequence[T], size: Callable[[T], int], limit: int,
         key: Callable[[T], object] = lambda _: None) -> Packing[T]:
    """Greedy in order: fill a batch until the next item would exceed `limit` bytes or changes `key`."""
    result: Packing[T] = Packing()
    current: list[T] = []
    used = ENVELOPE_RESERVE
    current_key: object = None
    for item in items:
        cost = batch_cost(size(item))
        if cost + ENVELOPE_RESERVE > limit:
            result.oversize.append(item)
            continue
        item_key = key(item)
        if current and (used + cost > limit or item_key != current_key):
            result.batches.append(current)
            current, used = [], ENVELOPE_RESERVE
        if not current:
            current_key = item_key
        current.append(item)
        used += cost
    if current:
        result.batches.append(current)
    return result
