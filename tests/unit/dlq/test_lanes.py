"""Lane bookkeeping: the default lane count, the tally shared by forked lanes, the per-lane rate."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from digest_dlq import bus, lanes, scan
from digest_dlq.policy import RateLimiter


@pytest.mark.parametrize(("cpus", "expected"), [({0}, 1), ({0, 1}, 2), ({0, 1, 2, 3}, 2)])
def test_auto_count_is_two_lanes_where_two_cpus_are_usable(monkeypatch: pytest.MonkeyPatch, cpus: set[int],
                                                           expected: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: cpus, raising=False)
    assert lanes.auto_count() == expected


def test_auto_count_is_one_lane_where_the_platform_cannot_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(lanes, "can_fork", lambda: False)
    assert lanes.auto_count() == 1


def _child_acts(tally: lanes.SharedTally, acted: list[bool]) -> None:
    tally.see(42)
    acted.extend(tally.act(stop_after=3) for _ in range(2))


def test_the_shared_tally_counts_across_processes() -> None:
    context = multiprocessing.get_context("fork")
    tally = lanes.SharedTally(context, 2)
    child = context.Process(target=_child_acts, args=(tally, []))
    child.start()
    child.join()
    assert child.exitcode == 0
    assert tally.max_seen == 42 and tally.acted == 2
    assert tally.act(stop_after=3) and not tally.act(stop_after=3)  # the child's two count toward the limit
    tally.see(7)
    assert tally.max_seen == 42


def test_each_forked_lane_gets_its_share_of_the_rate() -> None:
    options = bus.ActOptions(limiter=RateLimiter(30), lanes=3)
    limiter = scan._lane_limiter(options)
    assert limiter is not None and limiter.rate == 10
    assert scan._lane_limiter(bus.ActOptions(lanes=3)) is None
