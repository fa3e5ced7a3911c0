"""Pure classification of Bot Connector responses and errors into failures."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus

from digest_worker.failures import Category, Failure

TRANSIENT_STATUSES = frozenset({408, 412, 429, 500, 502, 503, 504})


def status_kind(status: int) -> str:
    """`Teams` + the HTTP phrase in CamelCase: 404 → TeamsNotFound, 429 → TeamsTooManyRequests."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"TeamsHttp{status}"
    return "Teams" + "".join(word.capitalize() for word in phrase.replace("-", " ").split())


def classify_status(status: int, detail: str, retry_after: float | None = None) -> Failure:
    kind = status_kind(status)
    if status == 401:
        return Failure(Category.SYSTEMIC, kind, f"HTTP 401: the connector rejected the bot's token: {detail}",
                       status=status)
    if status in TRANSIENT_STATUSES or status >= 500:
        return Failure(Category.TRANSIENT, kind, f"HTTP {status}: {detail}", retry_after=retry_after, status=status)
    return Failure(Category.PERMANENT, kind, f"HTTP {status}: {detail}", status=status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_class(status: int | None) -> str:
    """Metric label: 2xx / 4xx / 5xx, or `error` when no HTTP status was received."""
    return f"{status // 100}xx" if status else "error"
