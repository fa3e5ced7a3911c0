"""A peek walk that does not trust the broker's order: every sequence number once, whatever the pages hold.

The service returns each page in sequence order from the number asked for, but a walk must stay right against one
that does not (an emulator, a proxy, a partitioned entity): it asks for the next page after the highest sequence
number seen so far, never yields a sequence number twice, and stops on an empty page or one that brings nothing
past what it has seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def walk(peek: Callable[[int], Sequence[T]], sequence_of: Callable[[T], int], from_sequence: int = 1,
         to_sequence: int | None = None, on_page: Callable[[int], None] | None = None) -> Iterator[T]:
    """Yield what the pages `peek(start)` returns hold between `from_sequence` and `to_sequence` (inclusive), each
    sequence number once, every page in sequence order."""
    seen: set[int] = set()
    start = from_sequence
    while to_sequence is None or start <= to_sequence:
        page = peek(start)
        if not page:
            return
        if on_page is not None:
            on_page(len(page))
        highest = start - 1
        for item in sorted(page, key=sequence_of):
            seq = sequence_of(item)
            highest = max(highest, seq)
            if seq >= from_sequence and (to_sequence is None or seq <= to_sequence) and seq not in seen:
                seen.add(seq)
                yield item
        if highest < start:  # nothing at or past where this page was asked to start: the walk is over
            return
        start = highest + 1
