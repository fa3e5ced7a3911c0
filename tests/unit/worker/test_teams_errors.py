"""Classification of Bot Connector answers and errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import DeserializationError
from msrest.exceptions import ClientRequestError

from digest_worker.failures import Category, FailureError
from digest_worker.teams import classify
from digest_worker.teams_errors import classify_status, parse_retry_after, status_class, status_kind


@pytest.mark.parametrize(("status", "category", "kind"), [
    (400, Category.PERMANENT, "TeamsBadRequest"),
    (401, Category.SYSTEMIC, "TeamsUnauthorized"),
    (403, Category.PERMANENT, "TeamsForbidden"),
    (404, Category.PERMANENT, "TeamsNotFound"),
    (409, Category.PERMANENT, "TeamsConflict"),
    (413, Category.PERMANENT, "TeamsRequestEntityTooLarge"),
    (408, Category.TRANSIENT, "TeamsRequestTimeout"),
    (412, Category.TRANSIENT, "TeamsPreconditionFailed"),
    (429, Category.TRANSIENT, "TeamsTooManyRequests"),
    (500, Category.TRANSIENT, "TeamsInternalServerError"),
    (502, Category.TRANSIENT, "TeamsBadGateway"),
    (503, Category.TRANSIENT, "TeamsServiceUnavailable"),
    (504, Category.TRANSIENT, "TeamsGatewayTimeout"),
    (599, Category.TRANSIENT, "TeamsHttp599"),
])
def test_status_table(status: int, category: Category, kind: str) -> None:
    failure = classify_status(status, "detail", retry_after=2.0)
    assert (failure.category, failure.kind, failure.status) == (category, kind, status)
    assert f"HTTP {status}" in failure.detail
    assert status_kind(status) == kind


def test_retry_after_kept_on_transient() -> None:
    assert classify_status(429, "x", 3.0).retry_after == 3.0


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None),
    ("Sat, 28 Nov 2026 12:00:10 GMT", 10.0), ("Sat, 28 Nov 2026 11:00:00 GMT", 0.0),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)) == expected


def test_status_class() -> None:
    assert [status_class(s) for s in (201, 404, 503, None)] == ["2xx", "4xx", "5xx", "error"]


@pytest.mark.parametrize(("error", "category", "kind"), [
    (PermissionError("Failed to get access token with error: invalid_client"), Category.SYSTEMIC,
     "TeamsCredentialsRejected"),
    (Exception("Invalid app_id"), Category.SYSTEMIC, "TeamsConfiguration"),
    (DeserializationError("Unable to deserialize"), Category.TRANSIENT, "TeamsBadGateway"),
    (ClientRequestError("Error occurred in request., ReadTimeout: Read timed out."), Category.TRANSIENT,
     "TeamsTimeout"),
    (ClientRequestError("Error occurred in request., ConnectionError: refused"), Category.TRANSIENT,
     "TeamsUnreachable"),
    (TimeoutError(), Category.TRANSIENT, "TeamsTimeout"),
    (ConnectionRefusedError("token endpoint"), Category.TRANSIENT, "TeamsTokenEndpointUnreachable"),
    (KeyError("surprise"), Category.TRANSIENT, "TeamsUnexpected"),
    (aiohttp.ServerTimeoutError("read"), Category.TRANSIENT, "TeamsTimeout"),
    (aiohttp.ServerDisconnectedError(), Category.TRANSIENT, "TeamsUnreachable"),
])
def test_sdk_exceptions(error: Exception, category: Category, kind: str) -> None:
    failure = classify(error).failure
    assert (failure.category, failure.kind) == (category, kind)


def test_already_classified_passes_through() -> None:
    error = FailureError(classify_status(404, "x"))
    assert classify(error) is error


def test_msrest_retry_policy_is_unchanged_by_the_speed_up() -> None:
    from msrest.universal_http.requests import ClientRetryPolicy

    import digest_worker.teams  # noqa: F401 - applies the speed-up

    original_safe = [i for i in range(500) if i != 408] + [501, 505]
    expected = [i for i in range(999) if i not in original_safe]
    policy = ClientRetryPolicy()()  # type: ignore[no-untyped-call]
    assert isinstance(ClientRetryPolicy.safe_codes, frozenset)
    assert sorted(ClientRetryPolicy.safe_codes) == sorted(original_safe)
    assert policy.status_forcelist == expected


def test_message_model_posts_what_the_sdk_deserialiser_would() -> None:
    from botbuilder import schema
    from botbuilder.schema import Activity
    from msrest import Serializer

    from digest_worker.card import Digest, DigestItem, render
    from digest_worker.teams import message_model

    serializer: Any = Serializer({k: v for k, v in vars(schema).items() if isinstance(v, type)})  # type: ignore[no-untyped-call]
    items = [DigestItem("ana", f"t{i}", "s", "https://x/", float(i), datetime(2026, 11, 1, tzinfo=UTC))
             for i in range(3)]
    for activity in (render(Digest("T", 7, items)), render(Digest("T", 7, [])),
                     {"type": "message", "text": "hi", "entities": [{"type": "mention"}]}):
        fast = serializer.body(message_model(activity), "Activity")
        assert fast == serializer.body(Activity().deserialize(activity), "Activity")
        assert fast["type"] == "message"
