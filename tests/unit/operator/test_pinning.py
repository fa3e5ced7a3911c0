"""Pure pinning decisions: when the registry is asked, backoff, bookkeeping; pull-secret credentials."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from digest_api.imageref import parse_image
from digest_api.spec import ImagePolicy
from digest_operator.pinning import (
    RESOLVE_REQUESTED_AT,
    Backoff,
    decide,
    failed_status,
    resolved_status,
    seconds,
)
from digest_operator.pullsecrets import credentials_for
from digest_operator.registry import Credentials, parse_challenge

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
TAG = parse_image("registry.example.com/team/worker:1.0")
DIGEST = "sha256:" + "ab" * 32
RESOLVED = {"requested": str(TAG), "resolved": f"{TAG}@{DIGEST}", "resolvedTime": "2026-11-28T11:59:00Z",
            "resolvedGeneration": 3}


def _decide(mode: str = "Resolve", status: dict[str, Any] | None = None, generation: int = 3,
            annotations: dict[str, Any] | None = None, interval: str = "5m") -> Any:
    return decide(TAG, ImagePolicy(mode=mode, track_interval=interval), generation=generation,
                  annotations=annotations or {}, image_status=status if status is not None else dict(RESOLVED),
                  now=NOW, backoff=Backoff(10, 300))


def test_pinned_images_are_used_as_is_in_every_mode() -> None:
    pinned = parse_image(f"registry.example.com/team/worker:1.0@{DIGEST}")
    for mode in ("Require", "Resolve", "Track"):
        decision = decide(pinned, ImagePolicy(mode=mode), generation=1, annotations={},
                          image_status={}, now=NOW, backoff=Backoff())
        assert (decision.action, decision.image) == ("use", pinned)


def test_require_refuses_a_tag() -> None:
    assert _decide("Require").action == "refuse"


def test_recorded_resolution_is_reused_until_something_asks_again() -> None:
    decision = _decide()
    assert (decision.action, str(decision.image)) == ("recorded", f"{TAG}@{DIGEST}")
    assert _decide(status={}).why == "first resolution"
    assert _decide(generation=4).why == "spec changed"
    assert _decide(status={**RESOLVED, "requested": "registry.example.com/team/worker:2.0"}).action == "resolve"
    requested = _decide(annotations={RESOLVE_REQUESTED_AT: "t1"})
    assert (requested.action, requested.why) == ("resolve", f"requested by {RESOLVE_REQUESTED_AT}=t1")
    assert _decide(status={**RESOLVED, "resolveRequestedAt": "t1"}, annotations={RESOLVE_REQUESTED_AT: "t1"}
                   ).action == "recorded"


def test_track_resolves_again_after_the_interval_only() -> None:
    assert _decide("Track", interval="5m").action == "recorded"  # resolved a minute ago
    assert _decide("Track", interval="1m").action == "resolve"
    assert _decide("Resolve", interval="1m").action == "recorded"


def test_failures_back_off_exponentially() -> None:
    backoff = Backoff(10, 300)
    assert [backoff.delay(n) for n in (0, 1, 2, 3, 6, 40)] == [0, 10, 20, 40, 300, 300]
    failing = {**RESOLVED, "resolveFailures": 2, "lastResolveAttemptTime": "2026-11-28T11:59:50Z"}
    waiting = _decide(generation=4, status=failing)
    assert (waiting.action, waiting.retry_in) == ("wait", 10.0)  # 20 s after 11:59:50
    failing["lastResolveAttemptTime"] = "2026-11-28T11:59:40Z"
    assert _decide(generation=4, status=failing).action == "resolve"


def test_bookkeeping() -> None:
    image = parse_image(f"{TAG}@{DIGEST}")
    failed = failed_status(dict(RESOLVED), TAG, "2026-11-28T12:00:00Z")
    assert (failed["resolveFailures"], failed["resolved"]) == (1, f"{TAG}@{DIGEST}")
    assert failed_status(failed, TAG, "t")["resolveFailures"] == 2
    moved = failed_status(dict(RESOLVED), parse_image("registry.example.com/team/worker:2.0"), "t")
    assert "resolved" not in moved
    ok = resolved_status(failed, TAG, image, generation=5, annotations={RESOLVE_REQUESTED_AT: "t2"}, now="now")
    assert "resolveFailures" not in ok and "lastResolveAttemptTime" not in ok
    assert (ok["resolvedGeneration"], ok["resolvedTime"], ok["resolveRequestedAt"]) == (5, "now", "t2")


@pytest.mark.parametrize(("text", "expected"), [("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400)])
def test_seconds(text: str, expected: float) -> None:
    assert seconds(text) == expected


def _secret(auths: dict[str, Any]) -> dict[str, Any]:
    blob = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": blob}}


def test_pull_secret_credentials() -> None:
    auth = base64.b64encode(b"robot:p:w").decode()
    secrets = [
        _secret({"other.example.com": {"username": "a", "password": "b"}}),
        _secret({"https://registry.example.com/v2/": {"auth": auth}}),
        _secret({"https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}),
    ]
    assert credentials_for("registry.example.com", secrets) == Credentials("robot", "p:w")
    assert credentials_for("docker.io", secrets) == Credentials("hub", "pw")
    assert credentials_for("unknown.example.com", secrets) is None
    assert credentials_for("registry.example.com", [{"data": {".dockerconfigjson": "not base64 json"}}]) is None
    assert "p:w" not in repr(Credentials("robot", "p:w"))


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/worker:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                      "scope": "repository:team/worker:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
