"""Pure Adaptive Card rendering of a digest, kept under the Teams message size limit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
DEFAULT_MAX_BYTES = 28 * 1024
"""Documented for incoming webhooks; bots are cited higher. A safe default."""
MAX_SUMMARY_CHARS = 400


@dataclass(frozen=True)
class DigestItem:
    owner: str
    title: str
    summary: str
    url: str | None
    score: float
    created_at: datetime


@dataclass(frozen=True)
class Digest:
    title: str
    date_range_days: int
    items: Sequence[DigestItem]


class CardTooLarge(Exception):
    """Even the header alone does not fit."""


def default_title(days: int) -> str:
    return f"Digest of the last {days} day{'s' if days != 1 else ''}"


def activity_size(activity: dict[str, Any]) -> int:
    return len(json.dumps(activity, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def message_activity(card: dict[str, Any], summary: str) -> dict[str, Any]:
    """The JSON shape of the message activity carrying the card (what is sent and what is measured)."""
    return {
        "type": "message",
        "summary": summary,
        "attachmentLayout": "list",
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}],
    }


def render(digest: Digest, *, max_bytes: int = DEFAULT_MAX_BYTES,
           empty_text: str = "Nothing new.") -> dict[str, Any]:
    """Digest → message activity dict whose serialized size is at most `max_bytes`.

    Items that do not fit are dropped from the end (lowest score) and replaced by "…and N more".
    """
    shown = list(digest.items)
    while True:
        activity = message_activity(_card(digest, shown, len(digest.items) - len(shown), empty_text), digest.title)
        if activity_size(activity) <= max_bytes:
            return activity
        if not shown:
            raise CardTooLarge(f"the card header alone is {activity_size(activity)} bytes (limit {max_bytes})")
        # drop enough items at once to get close, then one by one
        over = activity_size(activity) - max_bytes
        per_item = max(1, activity_size(activity) // (len(shown) + 1))
        drop = max(1, min(len(shown), over // per_item))
        shown = shown[: len(shown) - drop]


def _card(digest: Digest, shown: Sequence[DigestItem], hidden: int, empty_text: str) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": digest.title, "size": "Large", "weight": "Bolder", "wrap": True},
        {"type": "TextBlock", "text": _subtitle(digest), "isSubtle": True, "spacing": "None", "wrap": True},
    ]
    if not digest.items:
        body.append({"type": "TextBlock", "text": empty_text, "wrap": True})
    for item in shown:
        heading = f"[{_escape(item.title)}]({item.url})" if item.url else _escape(item.title)
        summary = item.summary
        if len(summary) > MAX_SUMMARY_CHARS:
            summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
        body.append({
            "type": "Container", "separator": True,
            "items": [
                {"type": "TextBlock", "text": heading, "weight": "Bolder", "wrap": True},
                {"type": "TextBlock", "text": summary, "wrap": True, "spacing": "Small"},
                {"type": "TextBlock", "isSubtle": True, "size": "Small", "spacing": "None", "wrap": True,
                 "text": f"{item.owner} · score {item.score:g} · {item.created_at:%Y-%m-%d}"},
            ],
        })
    if hidden:
        body.append({"type": "TextBlock", "text": f"…and {hidden} more", "isSubtle": True, "wrap": True})
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }


def _subtitle(digest: Digest) -> str:
    days, count = digest.date_range_days, len(digest.items)
    return f"Last {days} day{'s' if days != 1 else ''} · {count} item{'s' if count != 1 else ''}"


def _escape(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]")
