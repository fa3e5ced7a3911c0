"""Pure evaluation of a pipeline's requeue policy (`spec.deadLetter.requeuePolicy`) over a DLQ snapshot.

Ordered rules, first match wins (reason glob, description regex, min/max age); actions Requeue / Skip / Park;
`maxRequeues` read from `x-requeue-count`; exponential backoff expressed as the copy's scheduled enqueue time;
`defaultAction` for unmatched and exhausted messages; a per-run cap; a circuit breaker recomputed from the DLQ on
every run (so a stateless CronJob can never loop: requeued copies that fail again carry their count with them).
"""

from __future__ import annotations

import datetime
import fnmatch
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from digest_api.durations import parse_duration
from digest_api.spec import Backoff, RequeuePolicy, RequeueRule
from digest_dlq.message import DlqMessage

Action = Literal["Requeue", "Skip", "Park"]
CircuitState = Literal["Closed", "Open"]
DEFAULT_RULE = "(default)"


@dataclass(frozen=True)
class Decision:
    sequence_number: int
    action: Action
    rule: str
    """Name of the rule that matched, or `(default)`."""
    why: str
    """Short machine-friendly cause: matched, no-rule, exhausted, circuit-open, run-cap."""
    requeue_count: int
    """Requeues the message has had so far."""
    scheduled_at: datetime.datetime | None = None
    """For Requeue: when the copy is enqueued (backoff)."""


@dataclass(frozen=True)
class Circuit:
    state: CircuitState
    returned: int
    """Messages requeued within the window that are back in the dead-letter queue."""
    threshold: int
    window: datetime.timedelta


@dataclass(frozen=True)
class Plan:
    decisions: list[Decision]
    circuit: Circuit
    dry_run: bool

    def count(self, action: Action) -> int:
        return sum(1 for d in self.decisions if d.action == action)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rule_matches(rule: RequeueRule, message: DlqMessage, now: datetime.datetime) -> bool:
    match = rule.match
    if not fnmatch.fnmatchcase(message.reason, match.reason):
        return False
    if match.description is not None and not _regex(match.description).search(message.description):
        return False
    if match.min_age is not None or match.max_age is not None:
        age = message.age(now)
        if age is None:
            return False
        if match.min_age is not None and age < parse_duration(match.min_age):
            return False
        if match.max_age is not None and age > parse_duration(match.max_age):
            return False
    return True


def backoff_delay(backoff: Backoff, requeues_so_far: int) -> datetime.timedelta:
    """initial * multiplier^requeues_so_far, capped at max."""
    initial, cap = parse_duration(backoff.initial), parse_duration(backoff.max)
    factor = backoff.multiplier ** min(requeues_so_far, 64)
    seconds = min(initial.total_seconds() * factor, cap.total_seconds())
    return datetime.timedelta(seconds=seconds)


def circuit(policy: RequeuePolicy, messages: Sequence[DlqMessage], now: datetime.datetime) -> Circuit:
    """Open when at least `threshold` dead-lettered messages are copies requeued within `window`."""
    breaker = policy.circuit_breaker
    window = parse_duration(breaker.window)
    returned = 0
    for message in messages:
        if message.requeue_count < 1:
            continue
        at = message.requeued_at or message.enqueued_time
        if at is not None and now - at <= window:
            returned += 1
    state: CircuitState = "Open" if returned >= breaker.threshold else "Closed"
    return Circuit(state, returned, breaker.threshold, window)


def decide(policy: RequeuePolicy, message: DlqMessage, now: datetime.datetime, breaker: Circuit) -> Decision:
    """The decision for one message, before the per-run cap."""
    count = message.requeue_count
    seq = message.sequence_number
    for rule in policy.rules:
        if not rule_matches(rule, message, now):
            continue
        if rule.action != "Requeue":
            return Decision(seq, rule.action, rule.name, "matched", count)
        if count >= rule.max_requeues:
            return Decision(seq, policy.default_action, rule.name, "exhausted", count)
        if breaker.state == "Open":
            return Decision(seq, "Skip", rule.name, "circuit-open", count)
        return Decision(seq, "Requeue", rule.name, "matched", count,
                        scheduled_at=now + backoff_delay(rule.backoff, count))
    return Decision(seq, policy.default_action, DEFAULT_RULE, "no-rule", count)


def plan(policy: RequeuePolicy, messages: Sequence[DlqMessage], now: datetime.datetime) -> Plan:
    """Decisions for every message in sequence order; acting decisions beyond `maxMessagesPerRun` become Skip."""
    breaker = circuit(policy, messages, now)
    decisions: list[Decision] = []
    acting = 0
    for message in sorted(messages, key=lambda m: m.sequence_number):
        decision = decide(policy, message, now, breaker)
        if decision.action != "Skip":
            if acting >= policy.max_messages_per_run:
                decision = Decision(decision.sequence_number, "Skip", decision.rule, "run-cap",
                                    decision.requeue_count)
            else:
                acting += 1
        decisions.append(decision)
    return Plan(decisions, breaker, policy.mode == "DryRun")


class RateLimiter:
    """At most `rate` acquisitions per second on average (a token bucket of one second's burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._tokens = rate
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, n: int = 1) -> float:
        """Take `n` tokens, waiting as needed (callers queue up behind each other); returns the seconds waited."""
        with self._lock:
            return self._acquire(n)

    def _acquire(self, n: int) -> float:
        waited = 0.0
        while True:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= min(n, self.rate):
                self._tokens -= n
                return waited
            pause = (min(n, self.rate) - self._tokens) / self.rate
            self._sleep(pause)
            waited += pause
