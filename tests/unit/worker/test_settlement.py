"""The settlement decision table, exhaustively over outcome and delivery count."""

from __future__ import annotations

import itertools

import pytest

from digest_worker.failures import Category, Failure
from digest_worker.settlement import (
    Action,
    Decision,
    Outcome,
    Result,
    attempt_number,
    backoff,
    decide,
    is_final_attempt,
)

MAX = 3
COUNTS = [None, 0, 1, 2, 3, 7]


def failed(category: Category, kind: str = "TeamsServiceUnavailable", retry_after: float | None = None) -> Outcome:
    return Outcome(Result.FAILED, Failure(category, kind, "HTTP 503 from the connector", retry_after=retry_after))


def test_attempt_is_delivery_count_plus_one() -> None:
    assert [attempt_number(c) for c in (None, 0, 1, 2)] == [1, 1, 2, 3]
    # maxDeliveryCount=3: deliveries read 0, 1, 2; the one reading 2 is the last the broker hands out
    assert [is_final_attempt(c, 3) for c in (0, 1, 2, 3)] == [False, False, True, True]
    assert is_final_attempt(0, 1) and is_final_attempt(None, 1)


@pytest.mark.parametrize(("result", "count"), list(itertools.product(
    [Result.DELIVERED, Result.DUPLICATE, Result.SKIPPED], COUNTS)))
def test_success_completes_on_every_attempt(result: Result, count: int | None) -> None:
    assert decide(Outcome(result), count, MAX) == Decision(Action.COMPLETE)


@pytest.mark.parametrize("count", COUNTS)
def test_invalid_dead_letters_at_once_naming_the_field(count: int | None) -> None:
    decision = decide(Outcome(Result.INVALID, field="date_range_days", detail="must be <= 90"), count, MAX)
    assert decision == Decision(Action.DEAD_LETTER, "Permanent.InvalidMessage", "date_range_days: must be <= 90")


@pytest.mark.parametrize("count", COUNTS)
def test_permanent_dead_letters_at_once_with_its_kind(count: int | None) -> None:
    decision = decide(failed(Category.PERMANENT, "TeamsForbidden"), count, MAX)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason == "Permanent.TeamsForbidden"
    assert decision.description == "HTTP 503 from the connector"


@pytest.mark.parametrize(("count", "max_count"), list(itertools.product(COUNTS, [1, 2, 3, 10])))
def test_transient_abandons_until_the_final_attempt(count: int | None, max_count: int) -> None:
    decision = decide(failed(Category.TRANSIENT), count, max_count)
    attempt = (count or 0) + 1
    if attempt >= max_count:
        assert decision.action is Action.DEAD_LETTER
        assert decision.reason == "Transient.Exhausted.TeamsServiceUnavailable"
        assert decision.description == f"attempt {attempt} of {max_count}: HTTP 503 from the connector"
    else:
        assert decision == Decision(Action.ABANDON)


@pytest.mark.parametrize(("count", "max_count"), list(itertools.product(COUNTS, [1, 3])))
def test_systemic_never_dead_letters_and_pauses(count: int | None, max_count: int) -> None:
    assert decide(failed(Category.SYSTEMIC, "TeamsCredentialsRejected"), count, max_count) == Decision(
        Action.ABANDON, pause=True)


@pytest.mark.parametrize("count", COUNTS)
def test_shutdown_abandons(count: int | None) -> None:
    assert decide(Outcome(Result.SHUTDOWN), count, 1) == Decision(Action.ABANDON)


@pytest.mark.parametrize(("retry_after", "delay"), [(None, 0.0), (2.5, 2.5), (500.0, 60.0), (-1.0, 0.0)])
def test_retry_after_delays_the_abandon_capped(retry_after: float | None, delay: float) -> None:
    assert decide(failed(Category.TRANSIENT, retry_after=retry_after), 0, MAX).delay == delay


def test_long_details_are_clipped() -> None:
    outcome = Outcome(Result.FAILED, Failure(Category.PERMANENT, "X", "y" * 5000))
    description = decide(outcome, 0, MAX).description
    assert description is not None and len(description) == 1024 and description.endswith("…")


def test_failed_without_failure_is_a_bug() -> None:
    with pytest.raises(ValueError, match="without a failure"):
        decide(Outcome(Result.FAILED), 0, MAX)


def test_backoff_grows_caps_and_jitters() -> None:
    assert [backoff(a, 1.0, 10.0) for a in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff(3, 1.0, 10.0, rand=0.5) == 2.0
    assert backoff(0, 1.0, 10.0) == 1.0
