"""The client half of the cache (`KubeClient.list_all` and `.watch`) against a small HTTP server that answers as
kube-apiserver does: paged lists with continue tokens, and a watch whose events are lines split across chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer

from digest_operator.k8s import ApiError, KubeClient

BIG = "x" * 200_000  # one event far longer than aiohttp's line limit (64 KiB)


def event(type_: str, name: str, version: int, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "object": {"metadata": {"name": name, "resourceVersion": str(version)}, **extra}}


@pytest.fixture
async def server() -> AsyncIterator[tuple[BaseTestServer, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def deployments(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        params = dict(request.query)
        seen.append(params)
        if params.get("watch") == "true":
            if params["resourceVersion"] == "1":
                return aiohttp.web.json_response({"kind": "Status", "code": 410, "reason": "Expired",
                                                  "message": "too old resource version"}, status=410)
            response = aiohttp.web.StreamResponse()
            await response.prepare(request)
            lines = b"".join(json.dumps(e).encode() + b"\n" for e in (
                event("ADDED", "a", 11), event("MODIFIED", "big", 12, data=BIG),
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}}))
            for start in range(0, len(lines), 7000):  # chunks that cut events anywhere
                await response.write(lines[start:start + 7000])
                await asyncio.sleep(0)
            await response.write(json.dumps(event("DELETED", "a", 14)).encode())  # the last line has no newline
            await response.write_eof()
            return response
        if params.get("continue") == "page-2":
            return aiohttp.web.json_response({"metadata": {"resourceVersion": "10"}, "items": [{"n": 3}]})
        return aiohttp.web.json_response({"metadata": {"resourceVersion": "10", "continue": "page-2"},
                                          "items": [{"n": 1}, {"n": 2}]})

    app = aiohttp.web.Application()
    app.router.add_get("/apis/apps/v1/namespaces/ns/deployments", deployments)
    async with TestServer(app) as test_server:
        yield test_server, seen


async def test_list_all_follows_continue_tokens_and_keeps_the_first_pages_version(
        server: tuple[BaseTestServer, list[dict[str, str]]]) -> None:
    test_server, seen = server
    client = KubeClient(lambda: kopf.ConnectionInfo(server=str(test_server.make_url(""))), field_manager="test")
    try:
        items, version = await client.list_all("apps/v1", "deployments", "ns", "a=b", page=2)
    finally:
        await client.close()
    assert (items, version) == ([{"n": 1}, {"n": 2}, {"n": 3}], "10")
    assert seen == [{"labelSelector": "a=b", "limit": "2"}, {"labelSelector": "a=b", "limit": "2",
                                                             "continue": "page-2"}]


async def test_watch_yields_whole_events_of_any_length_and_410_is_an_error(
        server: tuple[BaseTestServer, list[dict[str, str]]]) -> None:
    test_server, seen = server
    client = KubeClient(lambda: kopf.ConnectionInfo(server=str(test_server.make_url(""))), field_manager="test")
    try:
        events = [e async for e in client.watch("apps/v1", "deployments", "ns", "a=b", "10", server_timeout=30,
                                                client_timeout=5)]
        with pytest.raises(ApiError) as info:
            async for _ in client.watch("apps/v1", "deployments", "ns", "a=b", "1", server_timeout=30,
                                        client_timeout=5):
                pass
    finally:
        await client.close()
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "11"), ("MODIFIED", "12"), ("BOOKMARK", "13"), ("DELETED", "14")]
    assert events[1]["object"]["data"] == BIG
    assert seen[0] == {"watch": "true", "allowWatchBookmarks": "true", "labelSelector": "a=b",
                       "resourceVersion": "10", "timeoutSeconds": "30"}
    assert (info.value.status, info.value.reason) == (410, "Expired")
