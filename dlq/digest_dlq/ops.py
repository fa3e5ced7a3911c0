"""The operations behind `digestctl dlq`: compose the pure core with the Service Bus I/O in `bus`."""

from __future__ import annotations

import datetime
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from digest_api.spec import RequeuePolicy
from digest_dlq import bus, scan
from digest_dlq.copy import Copy, IdMode, build_copy
from digest_dlq.message import DlqMessage
from digest_dlq.policy import Plan, RateLimiter, plan
from digest_dlq.records import from_record, to_record
from digest_dlq.report import Outcome, monitor_report
from digest_dlq.select import Selection

log = logging.getLogger("digest.dlq")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Context:
    endpoint: bus.Endpoint
    queue: str
    client_options: dict[str, Any]
    progress: Callable[[int], None] | None = None

    def client(self) -> Any:
        return self.endpoint.client(**self.client_options)


def select(ctx: Context, selection: Selection, now: datetime.datetime) -> list[DlqMessage]:
    """Peek the whole DLQ and keep the selected messages (limit applied in sequence order)."""
    start = selection.from_sequence or 1
    result: list[DlqMessage] = []
    with ctx.client() as client:
        for message in bus.peek_all(client, ctx.queue, from_sequence=start, to_sequence=selection.to_sequence,
                                    on_page=ctx.progress):
            if selection.matches(message, now):
                result.append(message)
                if selection.limit is not None and len(result) >= selection.limit:
                    break
    return result


def show(ctx: Context, sequence_number: int) -> DlqMessage | None:
    with ctx.client() as client:
        for message in bus.peek_all(client, ctx.queue, from_sequence=sequence_number):
            return message if message.sequence_number == sequence_number else None
    return None


def dead_letter_count(ctx: Context) -> int | None:
    """The queue's dead-letter count from the management API (`get_queue_runtime_properties`), or None where it
    is not reachable (no Manage right, the emulator without its CA): the caller counts by peeking instead."""
    try:
        facts = bus.queue_facts(ctx.endpoint, ctx.queue, runtime=True)
    except Exception as exc:  # no Manage right, unreachable management endpoint, ...
        log.info("dead-letter count unavailable from the management API (%s); counting by peek", type(exc).__name__)
        return None
    if facts.runtime is None or facts.runtime.get("deadLetterMessageCount") is None:
        return None
    return int(facts.runtime["deadLetterMessageCount"])


def dedupes(ctx: Context, queue: str) -> bool | None:
    try:
        return bus.queue_facts(ctx.endpoint, queue).requires_duplicate_detection
    except Exception as exc:  # no Manage right, unreachable management endpoint, ...
        log.warning("could not read %s settings from the management API (%s); assuming duplicate detection", queue,
                    type(exc).__name__)
        return None


@dataclass(frozen=True)
class RequeueOptions:
    to: str | None = None
    id_mode: IdMode = "auto"
    park_queue: str | None = None
    max_batch_bytes: int | None = None
    """None: what the target's link allows."""
    rate: float | None = None
    lanes: int = 1
    """Concurrent lock-scans, each on its own connection (`--parallel`)."""
    max_wait: float = 2.0
    """Seconds the dead-letter queue must stay empty before a scan ends."""
    lock_duration: float = 60.0
    after_send: Callable[[], None] | None = None
    """Test seam: called after each batch send, before the originals are completed."""


def requeue_preview(ctx: Context, selection: Selection, options: RequeueOptions,
                    now: datetime.datetime) -> list[dict[str, Any]]:
    """What `requeue` would do, from a peek (nothing is locked or changed)."""
    target = options.to or ctx.queue
    target_dedupes = dedupes(ctx, target)
    rows = []
    for message in select(ctx, selection, now):
        copy = build_copy(message, id_mode=options.id_mode, target_dedupes=target_dedupes is not False, now=now)
        rows.append({
            "sequenceNumber": message.sequence_number, "messageId": message.message_id,
            "newMessageId": copy.message_id, "target": target, "requeueCount": message.requeue_count + 1,
            "reason": message.reason, "size": message.size,
            "oversize": message.size + 64 > (options.max_batch_bytes or bus.DEFAULT_BATCH_BYTES),
        })
    return rows


def requeue(ctx: Context, selection: Selection, options: RequeueOptions, now: datetime.datetime) -> Outcome:
    target = options.to or ctx.queue
    target_dedupes = dedupes(ctx, target) is not False
    matched = 0

    def choose(message: DlqMessage) -> bus.Act | None:
        nonlocal matched
        if not selection.matches(message, now):
            return None
        if selection.limit is not None and matched >= selection.limit:
            return None
        matched += 1
        copy = build_copy(message, id_mode=options.id_mode, target_dedupes=target_dedupes, now=now)
        fallback = None
        if options.park_queue:
            fallback = bus.Act("park", options.park_queue, build_copy(message, now=now, count_requeue=False))
        return bus.Act("requeue", target, copy, fallback)

    act_options = _act_options(ctx, options, selection.limit)
    act_options.targets = (target,)
    return scan.run(ctx.endpoint, ctx.client_options, ctx.queue, choose, act_options)


def _act_options(ctx: Context, options: RequeueOptions, stop_after: int | None) -> bus.ActOptions:
    return bus.ActOptions(
        max_batch_bytes=options.max_batch_bytes,
        limiter=RateLimiter(options.rate) if options.rate else None, on_progress=ctx.progress,
        stop_after=stop_after, after_send=options.after_send, lanes=options.lanes, max_wait_time=options.max_wait,
    )


def export(ctx: Context, messages: Iterable[DlqMessage], out: IO[str]) -> int:
    count = 0
    for message in messages:
        out.write(json.dumps(to_record(message), separators=(",", ":"), sort_keys=True) + "\n")
        count += 1
    out.flush()
    return count


def read_export(path: Path) -> Iterator[DlqMessage]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield from_record(json.loads(line), number)


def purge(ctx: Context, selection: Selection, now: datetime.datetime, only: set[int] | None = None,
          options: RequeueOptions | None = None) -> Outcome:
    """Complete (delete) the selected messages; with `only`, never anything outside that set (the export)."""
    matched = 0

    def choose(message: DlqMessage) -> bus.Act | None:
        nonlocal matched
        if only is not None and message.sequence_number not in only:
            return None
        if not selection.matches(message, now):
            return None
        if selection.limit is not None and matched >= selection.limit:
            return None
        matched += 1
        return bus.Act("purge")

    return scan.run(ctx.endpoint, ctx.client_options, ctx.queue, choose,
                    _act_options(ctx, options or RequeueOptions(), selection.limit))


def import_file(ctx: Context, messages: list[DlqMessage], options: RequeueOptions,
                now: datetime.datetime) -> Outcome:
    """Re-send exported messages to `--to` (default the queue): the same faithful copy as a requeue."""
    target = options.to or ctx.queue
    target_dedupes = dedupes(ctx, target) is not False
    copies: list[tuple[DlqMessage, Copy]] = [
        (m, build_copy(m, id_mode=options.id_mode, target_dedupes=target_dedupes, now=now)) for m in messages
    ]
    with ctx.client() as client:
        return bus.send_copies(client, target, copies, _act_options(ctx, options, None))


# ---- monitor ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyDocument:
    """The ConfigMap the operator renders (`render/dlq_monitor.policy_document`)."""

    pipeline: str | None
    queue: str
    policy: RequeuePolicy

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> PolicyDocument:
        pipeline = raw.get("pipeline") or {}
        name = f"{pipeline.get('namespace')}/{pipeline.get('name')}" if pipeline else None
        return cls(name, str(raw["queue"]), RequeuePolicy.model_validate(raw.get("requeuePolicy") or {}))


@dataclass
class MonitorResult:
    plan: Plan
    outcome: Outcome
    report: dict[str, Any]


def monitor(ctx: Context, document: PolicyDocument, now: datetime.datetime, max_wait: float = 2.0) -> MonitorResult:
    """One evaluation of the requeue policy: snapshot (peek), plan (pure), act (unless DryRun), report."""
    policy = document.policy
    with ctx.client() as client:
        snapshot = list(bus.peek_all(client, ctx.queue, on_page=ctx.progress))
    the_plan = plan(policy, snapshot, now)
    by_seq = {m.sequence_number: m for m in snapshot}
    decisions = {d.sequence_number: d for d in the_plan.decisions}
    outcome = Outcome()
    acting = [d for d in the_plan.decisions if d.action != "Skip"]
    if acting and not the_plan.dry_run:
        target_dedupes = dedupes(ctx, ctx.queue) is not False

        def choose(message: DlqMessage) -> bus.Act | None:
            decision = decisions.get(message.sequence_number)
            if decision is None or decision.action == "Skip":
                return None
            park = None
            if policy.park_queue:
                park = bus.Act("park", policy.park_queue, build_copy(message, now=now, count_requeue=False))
            if decision.action == "Park":
                return park
            copy = build_copy(message, target_dedupes=target_dedupes, now=now,
                              scheduled_enqueue_time=decision.scheduled_at)
            return bus.Act("requeue", ctx.queue, copy, park)

        options = bus.ActOptions(limiter=RateLimiter(policy.max_messages_per_second), on_progress=ctx.progress,
                                 stop_after=len(acting), targets=(ctx.queue,),
                                 max_wait_time=max_wait)
        outcome = scan.run(ctx.endpoint, ctx.client_options, ctx.queue, choose, options)
    done = set(outcome.requeued) | set(outcome.parked)
    remaining = [m for m in snapshot if m.sequence_number not in done]
    counts: dict[str, int] = dict(Counter(str(d.action) for d in the_plan.decisions))
    reasons: dict[str, dict[str, int]] = {}
    for decision in the_plan.decisions:
        reason = by_seq[decision.sequence_number].reason or "(none)"
        bucket = reasons.setdefault(decision.action, {})
        bucket[reason] = bucket.get(reason, 0) + 1
    circuit = {"state": the_plan.circuit.state, "returned": the_plan.circuit.returned,
               "threshold": the_plan.circuit.threshold}
    skipped_why = dict(Counter(d.why for d in the_plan.decisions if d.action == "Skip"))
    report = monitor_report(
        pipeline=document.pipeline, queue=ctx.queue, now=now, mode=policy.mode, remaining=remaining,
        decisions=counts, reasons=reasons, outcome=outcome, circuit=circuit, count=dead_letter_count(ctx),
        count_source="management",
    )
    report["skipped"] = skipped_why
    return MonitorResult(the_plan, outcome, report)
