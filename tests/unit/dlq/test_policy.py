"""The requeue policy as a table: ordered rules, first match, globs, regexes, ages, maxRequeues, backoff, caps,
the circuit breaker and DryRun."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from digest_api.spec import RequeuePolicy
from digest_dlq.message import DlqMessage
from digest_dlq.policy import RateLimiter, backoff_delay, circuit, decide, plan

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def msg(seq: int = 1, reason: str = "Transient.Exhausted.Http", description: str = "HTTP 503 from Teams",
        age: datetime.timedelta = datetime.timedelta(minutes=30), requeues: int | None = None,
        requeued_ago: datetime.timedelta | None = None) -> DlqMessage:
    app: dict[str, Any] = {"DeadLetterReason": reason, "DeadLetterErrorDescription": description}
    if requeues is not None:
        app["x-requeue-count"] = requeues
    if requeued_ago is not None:
        app["x-requeued-at"] = (NOW - requeued_ago).isoformat()
    return DlqMessage(sequence_number=seq, message_id=f"m{seq}", enqueued_time=NOW - age, delivery_count=0,
                      body_type="data", body=[b"x"], application_properties=app)


POLICY = RequeuePolicy.model_validate({
    "parkQueue": "parked",
    "rules": [
        {"name": "poison", "match": {"reason": "Poison.*"}, "action": "Park"},
        {"name": "teams-throttle", "match": {"reason": "Transient.Exhausted.*", "description": "HTTP (429|503)"},
         "action": "Requeue", "maxRequeues": 3,
         "backoff": {"initial": "1m", "multiplier": 2, "max": "5m"}},
        {"name": "young", "match": {"reason": "MaxDeliveryCountExceeded", "maxAge": "1h"}, "action": "Skip"},
        {"name": "old-mdc", "match": {"reason": "MaxDeliveryCountExceeded", "minAge": "1h"}, "action": "Requeue",
         "maxRequeues": 1},
        {"name": "catch-transient", "match": {"reason": "Transient.*"}, "action": "Skip"},
    ],
})


@pytest.mark.parametrize(
    ("message", "action", "rule", "why"),
    [
        (msg(reason="Poison.BadJson"), "Park", "poison", "matched"),
        (msg(), "Requeue", "teams-throttle", "matched"),
        (msg(description="HTTP 429 Too Many Requests"), "Requeue", "teams-throttle", "matched"),
        (msg(description="HTTP 400 bad card"), "Skip", "catch-transient", "matched"),  # regex misses: next rule
        (msg(requeues=2), "Requeue", "teams-throttle", "matched"),
        (msg(requeues=3), "Park", "teams-throttle", "exhausted"),  # exhausted → defaultAction (Park here)
        (msg(reason="MaxDeliveryCountExceeded", age=datetime.timedelta(minutes=5)), "Skip", "young", "matched"),
        (msg(reason="MaxDeliveryCountExceeded", age=datetime.timedelta(hours=3)), "Requeue", "old-mdc", "matched"),
        (msg(reason="MaxDeliveryCountExceeded", age=datetime.timedelta(hours=3), requeues=1), "Park", "old-mdc",
         "exhausted"),
        (msg(reason="TTLExpiredException"), "Skip", "(default)", "no-rule"),
        (msg(reason="transient.exhausted.http"), "Skip", "(default)", "no-rule"),  # globs are case-sensitive
        (msg(reason=""), "Skip", "(default)", "no-rule"),
    ],
)
def test_first_matching_rule_decides(message: DlqMessage, action: str, rule: str, why: str) -> None:
    policy = POLICY.model_copy(update={"default_action": "Park"}) if why == "exhausted" else POLICY
    decision = decide(policy, message, NOW, circuit(policy, [], NOW))
    assert (decision.action, decision.rule, decision.why) == (action, rule, why)


def test_exhausted_messages_are_never_requeued_with_default_skip() -> None:
    decision = decide(POLICY, msg(requeues=3), NOW, circuit(POLICY, [], NOW))
    assert (decision.action, decision.why) == ("Skip", "exhausted")
    assert decide(POLICY, msg(requeues=7), NOW, circuit(POLICY, [], NOW)).action == "Skip"


def test_requeue_count_is_read_from_bytes_and_strings() -> None:
    # the SDK returns application properties with bytes keys/values; the count must not read 0 forever
    message = msg()
    message.application_properties["x-requeue-count"] = b"3"
    assert message.requeue_count == 3
    assert decide(POLICY, message, NOW, circuit(POLICY, [], NOW)).why == "exhausted"
    message.application_properties["x-requeue-count"] = "garbage"
    assert message.requeue_count == 0


@pytest.mark.parametrize(("requeues", "minutes"), [(0, 1), (1, 2), (2, 4), (3, 5), (10, 5)])
def test_backoff_is_exponential_and_capped(requeues: int, minutes: int) -> None:
    backoff = POLICY.rules[1].backoff
    assert backoff_delay(backoff, requeues) == datetime.timedelta(minutes=minutes)


def test_requeue_decisions_schedule_the_copy_in_the_future() -> None:
    decision = decide(POLICY, msg(requeues=2), NOW, circuit(POLICY, [], NOW))
    assert decision.scheduled_at == NOW + datetime.timedelta(minutes=4)


def test_circuit_opens_when_requeued_messages_come_back_within_the_window() -> None:
    policy = POLICY.model_copy(update={"circuit_breaker": POLICY.circuit_breaker.model_copy(
        update={"threshold": 3, "window": "10m"})})
    back = [msg(seq=i, requeues=1, requeued_ago=datetime.timedelta(minutes=2)) for i in range(1, 4)]
    old = [msg(seq=10 + i, requeues=1, requeued_ago=datetime.timedelta(hours=2)) for i in range(5)]
    fresh = [msg(seq=20), msg(seq=21, reason="Poison.X")]
    assert circuit(policy, back[:2] + old + fresh, NOW).state == "Closed"
    the_plan = plan(policy, back + old + fresh, NOW)
    assert the_plan.circuit.state == "Open" and the_plan.circuit.returned == 3
    by_seq = {d.sequence_number: d for d in the_plan.decisions}
    assert by_seq[20].action == "Skip" and by_seq[20].why == "circuit-open"
    assert by_seq[21].action == "Park"  # parking continues while requeues pause
    assert the_plan.count("Requeue") == 0


def test_per_run_cap_counts_only_acting_decisions() -> None:
    policy = POLICY.model_copy(update={"max_messages_per_run": 2})
    messages = [msg(seq=1, reason="TTLExpiredException"), msg(seq=2), msg(seq=3, reason="Poison.A"), msg(seq=4)]
    the_plan = plan(policy, messages, NOW)
    assert [(d.action, d.why) for d in the_plan.decisions] == [
        ("Skip", "no-rule"), ("Requeue", "matched"), ("Park", "matched"), ("Skip", "run-cap")]


def test_dry_run_is_marked_on_the_plan() -> None:
    assert plan(POLICY.model_copy(update={"mode": "DryRun"}), [msg()], NOW).dry_run
    assert not plan(POLICY, [msg()], NOW).dry_run


def test_empty_policy_skips_everything() -> None:
    the_plan = plan(RequeuePolicy(), [msg(), msg(seq=2, reason="Poison.X")], NOW)
    assert [d.action for d in the_plan.decisions] == ["Skip", "Skip"]


def test_policy_model_refuses_park_without_queue() -> None:
    with pytest.raises(ValueError, match="parkQueue is required"):
        RequeuePolicy.model_validate({"defaultAction": "Park"})


def test_rate_limiter_paces_without_real_sleeps() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(10, clock=lambda: clock[0], sleep=sleep)
    for _ in range(10):
        limiter.acquire()
    assert slept == []  # one second of burst
    limiter.acquire(5)
    assert sum(slept) == pytest.approx(0.5)
    limiter.acquire(20)  # larger than the bucket: waits for a full bucket, then goes into debt
    assert clock[0] == pytest.approx(1.5)
