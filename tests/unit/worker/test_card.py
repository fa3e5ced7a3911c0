"""Card rendering: content, empty digest, and the size limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from digest_worker.card import (
    ADAPTIVE_CARD,
    CardTooLarge,
    Digest,
    DigestItem,
    activity_size,
    render,
)

WHEN = datetime(2026, 11, 20, tzinfo=UTC)


def items(n: int, summary: str = "short") -> list[DigestItem]:
    return [DigestItem(f"owner{i}", f"Item [{i}]", summary, f"https://x/{i}", 10.0 - i, WHEN) for i in range(n)]


def texts(activity: dict[str, object]) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                found.append(str(node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(activity)
    return found


def test_card_has_title_items_links_and_scores() -> None:
    activity = render(Digest("Weekly", 7, items(2)))
    assert activity["type"] == "message" and activity["summary"] == "Weekly"
    attachment = activity["attachments"][0]
    assert attachment["contentType"] == ADAPTIVE_CARD
    assert attachment["content"]["type"] == "AdaptiveCard"
    shown = texts(activity)
    assert shown[:2] == ["Weekly", "Last 7 days · 2 items"]
    assert "[Item \\[0\\]](https://x/0)" in shown
    assert "owner1 · score 9 · 2026-11-20" in shown
    assert not any("more" in t for t in shown)


def test_empty_digest_says_nothing_new() -> None:
    shown = texts(render(Digest("Daily", 1, []), empty_text="Nothing new today."))
    assert shown == ["Daily", "Last 1 day · 0 items", "Nothing new today."]


def test_item_without_url_and_long_summary_is_shortened() -> None:
    item = DigestItem("o", "plain", "s" * 1000, None, 1.5, WHEN)
    shown = texts(render(Digest("T", 2, [item])))
    assert "plain" in shown
    assert any(len(t) == 400 and t.endswith("…") for t in shown)


@pytest.mark.parametrize("limit", [4096, 8192, 28 * 1024])
def test_oversize_digest_is_truncated_with_and_n_more(limit: int) -> None:
    digest = Digest("Big", 30, items(50, summary="z" * 390))
    activity = render(digest, max_bytes=limit)
    assert activity_size(activity) <= limit
    shown = texts(activity)
    kept = sum(1 for t in shown if t.startswith("[Item"))
    assert 0 < kept < 50
    assert f"…and {50 - kept} more" in shown
    # the kept items are the first (highest score) ones
    assert shown[2].startswith("[Item \\[0\\]]")
    # tight: one more item would not have fitted
    bigger = render(Digest("Big", 30, items(kept + 1, summary="z" * 390)), max_bytes=10 * limit)
    assert activity_size(bigger) > limit or kept + 1 > 50
    assert json.loads(json.dumps(activity)) == activity


def test_header_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(CardTooLarge):
        render(Digest("T" * 2000, 1, items(1)), max_bytes=1024)
