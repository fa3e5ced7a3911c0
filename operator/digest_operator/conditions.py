"""Pure status-condition logic (metav1.Condition semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

READY = "Ready"
IMAGE_PINNED = "ImagePinned"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
DEAD_LETTER_CLEAR = "DeadLetterClear"
CONDITION_ORDER = (READY, IMAGE_PINNED, PROGRESSING, DEGRADED, DEAD_LETTER_CLEAR)

MAX_MESSAGE = 32768

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""


def merge_conditions(
    previous: list[dict[str, Any]], desired: list[Condition], generation: int | None, now: str,
) -> list[dict[str, Any]]:
    """The new conditions list: `lastTransitionTime` moves only when a condition's status changes.

    Conditions of types not in `desired` are kept as they were (another writer may own them).
    """
    old = {c.get("type"): c for c in previous}
    result: list[dict[str, Any]] = []
    for cond in desired:
        before = old.pop(cond.type, None)
        changed = before is None or before.get("status") != cond.status
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message[:MAX_MESSAGE],
            "lastTransitionTime": now if changed or before is None else before.get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        result.append(entry)
    result.extend(old.values())
    rank = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(result, key=lambda c: rank.get(str(c.get("type")), len(rank)))


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
