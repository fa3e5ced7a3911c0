"""Summaries of a run: the operator-facing outcome and the compact monitor report for the termination message."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from digest_dlq.message import DlqMessage

TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a container's termination message
REPORT_VERSION = 1


@dataclass
class Outcome:
    """What a destructive operation did, per source sequence number."""

    requeued: list[int] = field(default_factory=list)
    parked: list[int] = field(default_factory=list)
    purged: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    left: dict[int, str] = field(default_factory=dict)
    """Selected but still in the dead-letter queue, with why (oversize, lock lost, run cap, ...)."""
    failed: dict[int, str] = field(default_factory=dict)
    """An error while acting: the message is still in the dead-letter queue (or will reappear there)."""
    errors: list[str] = field(default_factory=list)
    """Run-level errors (connection lost, ...)."""

    @property
    def clean(self) -> bool:
        return not self.left and not self.failed and not self.errors

    def summary(self) -> dict[str, Any]:
        def reasons(items: dict[int, str]) -> dict[str, int]:
            return dict(Counter(items.values()).most_common())

        return {
            "requeued": len(self.requeued), "parked": len(self.parked), "purged": len(self.purged),
            "skipped": len(self.skipped), "left": len(self.left), "failed": len(self.failed),
            "leftReasons": reasons(self.left), "failedReasons": reasons(self.failed), "errors": self.errors[:10],
        }


def first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def age_seconds(enqueued: datetime.datetime | None, now: datetime.datetime) -> int | None:
    return None if enqueued is None else max(int((now - enqueued).total_seconds()), 0)


def stats(messages: list[DlqMessage], now: datetime.datetime) -> list[dict[str, Any]]:
    """Counts grouped by reason and first line of the description, oldest first within the biggest groups."""
    groups: dict[tuple[str, str], list[DlqMessage]] = {}
    for message in messages:
        groups.setdefault((message.reason, first_line(message.description)), []).append(message)
    rows: list[dict[str, Any]] = []
    for (reason, description), items in groups.items():
        times = [m.enqueued_time for m in items if m.enqueued_time is not None]
        rows.append({
            "reason": reason, "description": description, "count": len(items),
            "oldestAgeSeconds": age_seconds(min(times), now) if times else None,
            "newestAgeSeconds": age_seconds(max(times), now) if times else None,
            "bytes": sum(m.size for m in items),
        })
    rows.sort(key=lambda r: (-r["count"], r["reason"], r["description"]))
    return rows


def monitor_report(
    *, pipeline: str | None, queue: str, now: datetime.datetime, mode: str, remaining: list[DlqMessage],
    decisions: dict[str, int], reasons: dict[str, dict[str, int]], outcome: Outcome, circuit: dict[str, Any],
    count: int | None = None, count_source: str = "peek",
) -> dict[str, Any]:
    """The compact JSON the monitor writes to its termination message (read by the operator). `count` is the
    dead-letter count the management API gave (`count_source` "management"); by default, the messages left."""
    times = [m.enqueued_time for m in remaining if m.enqueued_time is not None]
    oldest = min(times) if times else None
    return {
        "v": REPORT_VERSION,
        "pipeline": pipeline,
        "queue": queue,
        "time": now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "mode": mode,
        "count": len(remaining) if count is None else count,
        "countSource": count_source if count is not None else "peek",
        "oldestEnqueuedTime": oldest.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z") if oldest else None,
        "oldestAgeSeconds": age_seconds(oldest, now),
        "decisions": decisions,
        "reasons": reasons,
        "requeued": len(outcome.requeued),
        "parked": len(outcome.parked),
        "left": len(outcome.left),
        "failed": len(outcome.failed),
        "circuit": circuit,
        "errors": [e[:200] for e in outcome.errors[:5]],
    }


def compact(report: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The report as one JSON line of at most `limit` bytes: drops the least important detail first."""
    doc = json.loads(json.dumps(report))
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    while len(text.encode()) > limit:
        if doc.get("errors"):
            doc["errors"] = doc["errors"][:-1]
        elif doc.get("reasons"):
            by_action: dict[str, dict[str, int]] = doc["reasons"]
            biggest = max(by_action, key=lambda a: len(by_action[a]))
            if not by_action[biggest]:
                doc["reasons"] = {}
            else:
                smallest = min(by_action[biggest], key=lambda r: by_action[biggest][r])
                del by_action[biggest][smallest]
                doc["truncated"] = True
        else:
            doc = {k: doc.get(k) for k in ("v", "pipeline", "queue", "time", "mode", "count", "oldestAgeSeconds",
                                           "requeued", "parked", "left", "failed")}
            doc["truncated"] = True
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
            break
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return text
