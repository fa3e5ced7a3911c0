"""The peek walk against broker doubles that return pages unsorted, overlapping, or ignoring where to start."""

from __future__ import annotations

import random

from digest_dlq.walk import walk


class Broker:
    """Holds sequence numbers; each page is up to `cap` of those at or after `start`, shuffled, plus `overlap`
    already-passed ones and a repeat of one of its own."""

    def __init__(self, seqs: list[int], *, cap: int = 250, overlap: int = 0, seed: int = 1) -> None:
        self.seqs, self.cap, self.overlap = sorted(seqs), cap, overlap
        self.rng = random.Random(seed)
        self.calls: list[int] = []

    def peek(self, start: int) -> list[int]:
        self.calls.append(start)
        page = [s for s in self.seqs if s >= start][: self.cap]
        before = [s for s in self.seqs if s < start]
        if page:
            page += [*self.rng.sample(before, min(self.overlap, len(before))), page[0]]
        self.rng.shuffle(page)
        return page


def _walk(broker: Broker, from_sequence: int = 1, to_sequence: int | None = None) -> list[int]:
    return list(walk(broker.peek, lambda s: s, from_sequence, to_sequence))


def test_every_sequence_number_once_in_order_from_unsorted_overlapping_pages() -> None:
    seqs = random.Random(7).sample(range(1, 100_000), 2_494)  # gaps, as after completions
    broker = Broker(seqs, overlap=40)
    assert _walk(broker) == sorted(seqs)
    assert len(broker.calls) == -(-len(seqs) // 250) + 1  # one call per page, and the empty one that ends it


def test_a_broker_that_ignores_the_start_ends_the_walk_instead_of_looping() -> None:
    pages: list[int] = []

    def stuck(start: int) -> list[int]:
        pages.append(start)
        return [30, 10, 20]

    assert list(walk(stuck, lambda s: s)) == [10, 20, 30]
    assert pages == [1, 31]


def test_bounds_are_inclusive_and_the_walk_stops_past_the_upper_one() -> None:
    broker = Broker(list(range(1, 2_001)), overlap=5)
    assert _walk(broker, from_sequence=240, to_sequence=760) == list(range(240, 761))
    assert max(broker.calls) <= 761  # no page asked for beyond the upper bound


def test_page_sizes_are_reported() -> None:
    sizes: list[int] = []
    assert list(walk(Broker(list(range(1, 601))).peek, lambda s: s, on_page=sizes.append)) == list(range(1, 601))
    assert sizes == [251, 251, 101]  # each page repeats one of its own
