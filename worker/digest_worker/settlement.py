"""The settlement decision table: outcome of processing and delivery attempt → complete / abandon / dead-letter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from digest_worker.failures import Category, Failure

MAX_DESCRIPTION = 1024


class Action(Enum):
    COMPLETE = "complete"
    ABANDON = "abandon"
    DEAD_LETTER = "dead_letter"


class Result(Enum):
    DELIVERED = "delivered"  # posted now
    DUPLICATE = "duplicate"  # already posted by an earlier delivery: complete without posting
    SKIPPED = "skipped"  # empty digest and empty digests are not posted
    INVALID = "invalid"  # the message is not a valid digest request
    FAILED = "failed"  # see `failure`
    SHUTDOWN = "shutdown"  # not finished within the drain period


@dataclass(frozen=True)
class Outcome:
    result: Result
    failure: Failure | None = None
    field: str | None = None
    detail: str | None = None
    activity_id: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None
    description: str | None = None
    delay: float = 0.0  # wait this long (lock kept) before abandoning, e.g. Teams' Retry-After
    pause: bool = False  # systemic: stop taking messages


def attempt_number(delivery_count: int | None) -> int:
    """1-based attempt. The SDK exposes the raw AMQP count of previous failed attempts (0 on the first delivery);
    a missing header (None) counts as the first."""
    return (delivery_count or 0) + 1


def is_final_attempt(delivery_count: int | None, max_delivery_count: int) -> bool:
    """The broker dead-letters after `max_delivery_count` deliveries, so that one is the last we get."""
    return attempt_number(delivery_count) >= max_delivery_count


def decide(outcome: Outcome, delivery_count: int | None, max_delivery_count: int,
           max_retry_after: float = 60.0) -> Decision:
    result = outcome.result
    if result in (Result.DELIVERED, Result.DUPLICATE, Result.SKIPPED):
        return Decision(Action.COMPLETE)
    if result is Result.SHUTDOWN:
        return Decision(Action.ABANDON)
    if result is Result.INVALID:
        return Decision(Action.DEAD_LETTER, "Permanent.InvalidMessage",
                        _clip(f"{outcome.field}: {outcome.detail}" if outcome.field else outcome.detail or "invalid"))
    failure = outcome.failure
    if failure is None:
        raise ValueError(f"outcome {result} without a failure")
    if failure.category is Category.PERMANENT:
        return Decision(Action.DEAD_LETTER, f"Permanent.{failure.kind}", _clip(failure.detail))
    if failure.category is Category.SYSTEMIC:
        return Decision(Action.ABANDON, pause=True)
    attempt = attempt_number(delivery_count)
    if attempt >= max_delivery_count:
        return Decision(Action.DEAD_LETTER, f"Transient.Exhausted.{failure.kind}",
                        _clip(f"attempt {attempt} of {max_delivery_count}: {failure.detail}"))
    delay = min(max(failure.retry_after or 0.0, 0.0), max_retry_after)
    return Decision(Action.ABANDON, delay=delay)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def backoff(attempt: int, initial: float, cap: float, rand: float = 1.0) -> float:
    """Exponential backoff with full jitter: `rand` in [0, 1] scales initial·2^(attempt-1), capped at `cap`."""
    base: float = min(cap, initial * 2.0 ** max(0, attempt - 1))
    return base * min(max(rand, 0.0), 1.0)
