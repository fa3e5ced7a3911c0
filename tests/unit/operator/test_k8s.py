"""Answers of the API server that are not JSON (its router's `404 page not found`, a proxy's HTML) become `ApiError`s;
no decoding error escapes the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer

from digest_operator.k8s import INVALID_RESPONSE, ApiError, KubeClient, response_body, response_error

# what kube-apiserver answers for a path it does not serve (e.g. a kind whose CRD is not installed)
NOT_SERVED = b"404 page not found\n"
STATUS_404 = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
              b'"message":"namespaces \\"gone\\" not found","reason":"NotFound","code":404}')


def test_plain_text_404_is_a_path_the_server_does_not_serve() -> None:
    error = response_error(404, NOT_SERVED)
    assert (error.status, error.reason, error.message, error.not_served) == (404, "NotFound", "404 page not found",
                                                                               True)
    assert not error.transient


def test_a_status_object_keeps_its_reason_and_message() -> None:
    error = response_error(404, STATUS_404)
    assert (error.reason, error.message, error.not_served) == ("NotFound", 'namespaces "gone" not found', False)


@pytest.mark.parametrize(("status", "payload", "reason", "message"), [
    (503, b"<html><body>upstream connect error</body></html>", "ServiceUnavailable",
     "<html><body>upstream connect error</body></html>"),
    (502, b"", "BadGateway", "HTTP 502 without a body"),
    (500, b"404", "InternalServerError", "404"),  # JSON, but no object
    (403, b"\xff\xfe forbidden", "Forbidden", "\ufffd\ufffd forbidden"),  # not even UTF-8
    (599, b"odd", "Error", "odd"),  # no HTTP reason phrase
])
def test_any_other_body_is_kept_as_text(status: int, payload: bytes, reason: str, message: str) -> None:
    error = response_error(status, payload, retry_after="3")
    assert (error.status, error.reason, error.message, error.not_served) == (status, reason, message, False)
    assert error.retry_after == 3.0


def test_long_text_bodies_are_cut() -> None:
    assert len(response_error(500, b"x" * 10_000).message) == 200


def test_a_success_body_that_is_not_a_json_object_is_a_transient_error() -> None:
    assert response_body(200, b'{"kind": "Pod"}') == {"kind": "Pod"}
    assert response_body(200, b"") == {}
    for payload in (b"<html>proxy login</html>", b"[]"):
        with pytest.raises(ApiError) as info:
            response_body(200, payload)
        assert info.value.reason == INVALID_RESPONSE and info.value.transient


@pytest.fixture
async def server() -> AsyncIterator[BaseTestServer]:
    """An API server that serves no keda.sh kinds: it answers like kube-apiserver's router, in plain text."""
    async def not_served(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=404, text="404 page not found\n", content_type="text/plain")

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", not_served)
    async with TestServer(app) as test_server:
        yield test_server


async def test_apply_of_a_kind_the_server_does_not_serve_raises_api_error(server: BaseTestServer) -> None:
    client = KubeClient(lambda: kopf.ConnectionInfo(server=str(server.make_url(""))), field_manager="test")
    obj = {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
           "metadata": {"name": "demo-servicebus", "namespace": "default"}}
    try:
        with pytest.raises(ApiError) as info:
            await client.apply(obj, "triggerauthentications")
        assert (info.value.status, info.value.not_served) == (404, True)
        assert await client.get("keda.sh/v1alpha1", "triggerauthentications", "default", "x") is None
    finally:
        await client.close()
