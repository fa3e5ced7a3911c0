"""What a registry (chosen by any pipeline author) can make the operator fetch: token realms are checked before any
request, credentials go only to the registry's own host (or an allowed one), token and manifest answers are capped,
a non-JSON token answer is RegistryUnavailable, and an allow-list bounds the registries contacted at all.

The registry here is a hostile one on loopback: it answers every manifest request with the challenge the test
chooses; the token endpoint (on another loopback address) records what reached it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import aiohttp.web
import pytest
import pytest_asyncio

from digest_api.imageref import parse_image
from digest_operator.registry import MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES, Credentials, RegistryClient, RegistryError
from tests.support.registry import free_port

DIGEST = "sha256:" + "a" * 64
SECRET = Credentials("robot", "s3cret")


@dataclass
class Server:
    host: str
    handler: Callable[[aiohttp.web.Request], aiohttp.web.StreamResponse]
    port: int = field(default_factory=free_port)
    seen: list[aiohttp.web.Request] = field(default_factory=list)
    _runner: aiohttp.web.AppRunner | None = None

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        self.seen.append(request)
        return self.handler(request)

    async def start(self) -> Server:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Hostile:
    registry: Server
    token: Server
    token_answer: Callable[[aiohttp.web.Request], aiohttp.web.StreamResponse]
    manifest: bytes | None = None
    """A manifest body served without a Docker-Content-Digest header (hashed by the client)."""


@pytest_asyncio.fixture
async def hostile() -> AsyncIterator[Hostile]:
    state: dict[str, Hostile] = {}

    def registry(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer good":
            realm = f"http://{state['h'].token.netloc}/token"
            return aiohttp.web.Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})
        body = state["h"].manifest
        if body is None:
            return aiohttp.web.Response(headers={"Docker-Content-Digest": DIGEST})
        return aiohttp.web.Response(body=b"" if request.method == "HEAD" else body)

    h = Hostile(Server("127.0.0.1", registry), Server("127.0.0.2", lambda r: state["h"].token_answer(r)),
                lambda r: aiohttp.web.json_response({"token": "good"}))
    state["h"] = h
    await h.registry.start()
    await h.token.start()
    yield h
    await h.registry.stop()
    await h.token.stop()


async def _resolve(h: Hostile, credentials: Credentials | None = SECRET, **kw: object) -> str:
    kw.setdefault("insecure_hosts", {h.registry.netloc})
    client = RegistryClient(timeout=5, **kw)  # type: ignore[arg-type]
    try:
        return (await client.resolve(parse_image(f"{h.registry.netloc}/team/worker:1.0"), credentials)).digest
    finally:
        await client.close()


async def _refused(h: Hostile, reason: str, credentials: Credentials | None = SECRET, **kw: object) -> str:
    with pytest.raises(RegistryError) as info:
        await _resolve(h, credentials, **kw)
    assert info.value.reason == reason, info.value.message
    assert SECRET.password not in info.value.message
    return info.value.message


async def test_a_plain_http_realm_on_another_host_is_never_fetched(hostile: Hostile) -> None:
    message = await _refused(hostile, "RegistryUnavailable")
    assert "plain http" in message and "127.0.0.2" in message
    assert hostile.token.seen == []  # not even an anonymous request


async def test_credentials_never_go_to_a_realm_on_another_host(hostile: Hostile) -> None:
    insecure = {hostile.registry.netloc, hostile.token.netloc}  # http allowed there: only the host check is left
    message = await _refused(hostile, "Unauthorized", insecure_hosts=insecure)
    assert "another host (127.0.0.2)" in message and "DIGEST_OPERATOR_REGISTRY_TOKEN_HOSTS" in message
    assert hostile.token.seen == []
    # anonymous, the realm is asked for a token without any Authorization
    assert await _resolve(hostile, None, insecure_hosts=insecure) == DIGEST
    assert [r.headers.get("Authorization") for r in hostile.token.seen] == [None]


async def test_an_allowed_token_host_receives_the_credentials(hostile: Hostile) -> None:
    insecure = {hostile.registry.netloc, hostile.token.netloc}
    assert await _resolve(hostile, insecure_hosts=insecure, token_hosts={"127.0.0.2"}) == DIGEST
    (asked,) = hostile.token.seen
    assert asked.headers["Authorization"] == aiohttp.encode_basic_auth(SECRET.username, SECRET.password)


@pytest.mark.parametrize(("answer", "expected"), [
    (lambda r: aiohttp.web.Response(text="<html>login</html>"), "not JSON"),
    (lambda r: aiohttp.web.Response(body=b"{" + b" " * MAX_TOKEN_BYTES + b"}"), "larger than"),
    (lambda r: aiohttp.web.Response(status=302, headers={"Location": "http://127.0.0.1:1/"}), "answered 302"),
])
async def test_bad_token_answers_are_registry_unavailable(hostile: Hostile, answer: Callable[
        [aiohttp.web.Request], aiohttp.web.StreamResponse], expected: str) -> None:
    hostile.token_answer = answer
    insecure = {hostile.registry.netloc, hostile.token.netloc}
    message = await _refused(hostile, "RegistryUnavailable", insecure_hosts=insecure, token_hosts={"127.0.0.2"})
    assert expected in message


async def test_a_manifest_above_the_size_limit_is_refused(hostile: Hostile) -> None:
    insecure = {hostile.registry.netloc, hostile.token.netloc}
    hostile.manifest = b"{}"
    digest = await _resolve(hostile, insecure_hosts=insecure, token_hosts={"127.0.0.2"})
    assert digest == "sha256:" + hashlib.sha256(b"{}").hexdigest()
    hostile.manifest = b"x" * (MAX_MANIFEST_BYTES + 1)
    message = await _refused(hostile, "RegistryUnavailable", insecure_hosts=insecure, token_hosts={"127.0.0.2"})
    assert "larger than" in message


async def test_the_allow_list_refuses_other_registries_before_any_request(hostile: Hostile) -> None:
    message = await _refused(hostile, "RegistryNotAllowed", allowed_registries={"registry.example.com"})
    assert f"registry {hostile.registry.netloc} is not allowed" in message
    assert hostile.registry.seen == []
    insecure = {hostile.registry.netloc, hostile.token.netloc}
    assert await _resolve(hostile, insecure_hosts=insecure, token_hosts={"127.0.0.2"},
                          allowed_registries={hostile.registry.netloc}) == DIGEST
