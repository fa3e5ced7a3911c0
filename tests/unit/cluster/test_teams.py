"""The local Teams (digest_cluster.teams) driven by real clients: MSAL, the worker's whole delivery, plain HTTP."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import msal
import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from digest_cluster.teams import LocalTeams, card_summary, page, write_certificate
from digest_worker.card import Digest, DigestItem, render
from tests.support.sbemulator import running_emulator
from tests.worker.harness import APP_ID, CONVERSATIONS, QUEUES, Stack, metric, request, wait_until

SECRET = "correct-horse"  # tests.worker.harness.SECRET: the worker's environment there uses it
SCOPES = ["https://api.botframework.com/.default"]


@dataclass
class Served:
    info: dict[str, Any]
    cert: Path
    record: Path

    @property
    def url(self) -> str:
        return str(self.info["service_url"])

    @property
    def login_url(self) -> str:
        return str(self.info["login_url"])

    def post(self, conversation: str, activity: Any, token: str | None = None, reply_to: str = "") -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        path = f"v3/conversations/{quote(conversation, safe='')}/activities" + (f"/{reply_to}" if reply_to else "")
        return requests.post(self.url + path, json=activity, headers=headers, timeout=10)

    def activities(self, conversation: str) -> list[dict[str, Any]]:
        response = requests.get(self.url + "api/activities", params={"conversation": conversation}, timeout=10)
        response.raise_for_status()
        return cast(list[dict[str, Any]], response.json())

    def stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], requests.get(self.url + "api/stats", timeout=10).json())

    def token(self) -> str:
        app = msal.ConfidentialClientApplication(APP_ID, client_credential=SECRET, authority=self.login_url)
        result = app.acquire_token_for_client(scopes=SCOPES)
        assert "access_token" in result, result
        return str(result["access_token"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`python -m digest_cluster.teams` on free loopback ports, stopped with SIGTERM."""
    directory = tmp_path_factory.mktemp("teams")
    cert, key, password, record = (directory / n for n in ("cert.pem", "key.pem", "password", "delivered.jsonl"))
    write_certificate(cert, key, ["127.0.0.1", "localhost"])
    password.write_text(SECRET + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "digest_cluster.teams", "--host", "127.0.0.1", "--connector-port", "0",
         "--token-port", "0", "--cert", str(cert), "--key", str(key), "--app-id", APP_ID,
         "--password-file", str(password), "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    try:
        readable, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if readable else ""
        assert line, f"no ready line; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield Served(json.loads(line), cert, record)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert SECRET not in line + out + err


@pytest.fixture(autouse=True)
def trust(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """MSAL's `verify=` loses to REQUESTS_CA_BUNDLE when that is set (requests merges the environment first)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(served.cert))


def test_ready_line_names_the_endpoints(served: Served) -> None:
    info = served.info
    assert info["service_url"].startswith("http://127.0.0.1:") and info["service_url"].endswith("/")
    assert info["login_url"].startswith("https://127.0.0.1:") and info["login_url"].endswith("/adfs")
    assert info["oauth_scope"] == "https://api.botframework.com" and info["auth"] is True
    assert requests.get(served.url + "healthz", timeout=10).text == "ok"


def test_msal_token_then_post_is_recorded_and_shown(served: Served) -> None:
    conversation = "19:msal@thread.tacv2"
    token = served.token()
    digest = Digest("Team news", 7, [DigestItem("ana", "Release 2.0", "It shipped.", "https://example.test/1", 9.0,
                                                datetime(2025, 1, 2))])
    response = served.post(conversation, render(digest), token)
    assert response.status_code == 201
    activity_id = response.json()["id"]
    assert activity_id.startswith("activity-")
    [posted] = served.activities(conversation)
    assert posted["status"] == 201 and posted["token"] == "issued" and posted["authorization"] is True
    assert posted["activity_id"] == activity_id and posted["reply_to"] is None
    assert posted["card"] == {"title": "Team news", "items": 1,
                              "shown": [{"heading": "[Release 2.0](https://example.test/1)", "text": "It shipped."}]}
    html = requests.get(served.url, timeout=10).text
    assert "Team news" in html and conversation in html and "1 item ·" in html
    assert '<a href="https://example.test/1" rel="noreferrer">Release 2.0</a>' in html
    recorded = [json.loads(line) for line in served.record.read_text().splitlines()]
    assert [r["activity_id"] for r in recorded if r["conversation_id"] == conversation] == [activity_id]
    stats = served.stats()
    assert stats["delivered_per_conversation"][conversation] == 1 and stats["tokens_issued"] >= 1


def test_wrong_secret_and_unknown_client_are_rejected_like_entra(served: Served) -> None:
    wrong = msal.ConfidentialClientApplication(APP_ID, client_credential="wrong", authority=served.login_url
                                               ).acquire_token_for_client(scopes=SCOPES)
    assert wrong["error"] == "invalid_client" and wrong["error_description"].startswith("AADSTS7000215: ")
    assert wrong["error_codes"] == [7000215]
    stranger = msal.ConfidentialClientApplication("00000000-0000-0000-0000-000000000000", client_credential=SECRET,
                                                  authority=served.login_url)
    assert stranger.acquire_token_for_client(scopes=SCOPES)["error"] == "unauthorized_client"
    token_url = served.info["token_url"]
    raw = requests.post(token_url, verify=str(served.cert), timeout=10, data={
        "grant_type": "client_credentials", "client_id": APP_ID, "client_secret": "wrong", "scope": SCOPES[0]})
    assert raw.status_code == 401 and raw.json()["error"] == "invalid_client"
    unscoped = requests.post(token_url, verify=str(served.cert), timeout=10, data={
        "grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
        "scope": "https://api.botframework.com"})
    assert unscoped.status_code == 400 and unscoped.json()["error_codes"] == [1002012]
    assert served.stats()["token_errors"]["AADSTS7000215"] >= 2


def test_posts_without_or_with_an_unknown_token_get_401(served: Served) -> None:
    conversation = "19:anonymous@thread.tacv2"
    card = {"type": "message", "attachments": []}
    before = served.stats()["rejected"]
    assert served.post(conversation, card).status_code == 401
    assert served.post(conversation, card, token="made-up").status_code == 401
    assert [(p["status"], p["authorization"], p["token"]) for p in served.activities(conversation)] == [
        (401, False, None), (401, True, "unknown")]
    stats = served.stats()
    assert stats["rejected"] == before + 2 and conversation not in stats["delivered_per_conversation"]
    assert conversation not in served.record.read_text()  # the record holds delivered activities only


def test_page_escapes_card_text(served: Served) -> None:
    conversation = "19:<i>evil</i>@thread.tacv2"
    card = {"type": "AdaptiveCard", "body": [
        {"type": "TextBlock", "text": "<script>alert(1)</script>"},
        {"type": "Container", "items": [{"type": "TextBlock", "text": "[<b>x</b>](javascript:alert(1))"},
                                        {"type": "TextBlock", "text": "<img src=x onerror=alert(2)>"}]}]}
    activity = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                     "content": card}]}
    assert served.post(conversation, activity, served.token()).status_code == 201
    html = requests.get(served.url, timeout=10).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x" in html
    assert "<script>alert" not in html and "<img" not in html and "<b>x" not in html and "<i>evil" not in html
    assert "javascript:" not in html.split("<pre>")[0]  # no link to it; only the escaped raw JSON shows it


def test_stats_count_requests_and_titles(served: Served) -> None:
    token = served.token()
    for title, conversation in (("A", "19:s1@x"), ("B", "19:s1@x"), ("A", "19:s1@x"), ("A", "19:s2@x")):
        activity = render(Digest(title, 1, []))
        activity["channelData"] = {"requestId": f"{conversation}/{title}"}
        assert served.post(conversation, activity, token, reply_to="1").status_code == 201
    stats = served.stats()
    assert stats["delivered_per_conversation"]["19:s1@x"] == 3 and stats["delivered_per_conversation"]["19:s2@x"] == 1
    assert stats["replies"] >= 4 and stats["repeated_titles"] >= 1 and stats["request_ids"] >= 3
    assert served.activities("19:s2@x")[0]["reply_to"] == "1"


async def test_worker_delivers_through_local_teams(served: Served, tmp_path: Path) -> None:
    """The real worker (CloudAdapter + MSAL) from Service Bus to the local Teams."""
    with running_emulator(QUEUES) as emulator:
        stack = Stack(emulator, cast(Any, served), cast(Any, served), f"sqlite:///{tmp_path}/worker.db")
        await stack.seed([("ana", "Release 2.0", 9.0, 1), ("bo", "Hotfix", 5.0, 2)], conversations=CONVERSATIONS[:1])
        await stack.send("digests", request("r-local-1", title="Weekly digest"))
        async with stack.worker() as app:
            await stack.settled(app, 1)
            assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 1
    [posted] = await wait_until(lambda: served.activities(CONVERSATIONS[0]), what="the delivered card")
    assert posted["status"] == 201 and posted["token"] == "issued" and posted["reply_to"] is None
    assert posted["card"]["title"] == "Weekly digest" and posted["card"]["items"] == 2
    activity = posted["activity"]
    assert activity["channelData"] == {"tenant": {"id": "tenant-1"}} and activity["summary"] == "Weekly digest"
    assert "requestId" not in json.dumps(activity)  # the worker's activity does not name the digest request


async def test_auth_can_be_turned_off_and_bad_bodies_are_refused() -> None:
    teams = LocalTeams(APP_ID, SECRET, auth=False)
    async with TestClient(TestServer(teams.connector_app())) as client:
        response = await client.post("/v3/conversations/c1/activities", json={"type": "message"})
        assert response.status == 201 and (await response.json()) == {"id": "activity-1"}
        bad = await client.post("/v3/conversations/c1/activities", data=b"not json",
                                headers={"Content-Type": "application/json"})
        assert bad.status == 400
        assert [(p["status"], p["token"]) for p in teams.activities()] == [(201, None), (400, None)]
        assert "(no Adaptive Card)" in await (await client.get("/")).text()


async def test_latency_set_through_the_api_delays_each_accepted_post() -> None:
    teams = LocalTeams(APP_ID, SECRET, auth=False)
    async with TestClient(TestServer(teams.connector_app())) as client:
        assert (await client.put("/api/latency", json={"seconds": 0.4})).status == 200
        assert (await client.put("/api/latency", json={"seconds": "soon"})).status == 400
        assert (await client.put("/api/latency", json={"seconds": 61})).status == 400
        started = time.monotonic()
        await asyncio.gather(*(client.post(f"/v3/conversations/c{i}/activities", json={"type": "message"})
                               for i in range(3)))
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 1.2, elapsed  # each post waits, concurrently, not one after the other
        assert len(teams.activities()) == 3


def test_card_summary_counts_hidden_items_and_page_renders_without_posts() -> None:
    items = [DigestItem("o", f"item {i}", "s" * 300, None, float(i), datetime(2025, 1, 1))
             for i in range(40)]
    activity = render(Digest("Big", 7, items), max_bytes=4096)
    summary = card_summary(activity)
    assert summary is not None and summary["items"] == 40 and 0 < len(summary["shown"]) < 40
    assert card_summary({"type": "message"}) is None
    assert "Nothing delivered yet." in page([], LocalTeams(APP_ID, SECRET).stats())
