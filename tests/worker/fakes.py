"""Local stand-ins for the cloud endpoints the worker talks to, each in its own thread and event loop:
a Bot Connector (`POST /v3/conversations/{id}/activities`) and an HTTPS token endpoint for the real MSAL path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.kubeconfig import free_port


class _ThreadedServer:
    """An aiohttp app served from a background thread with its own loop (the SDK fetches tokens synchronously)."""

    def __init__(self, app: web.Application, ssl_context: Any = None) -> None:
        self.port = free_port()
        self._app = app
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._runner = web.AppRunner(self._app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl).start()

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")

    def stop(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Reply:
    status: int = 201
    body: Any = None  # dict → JSON; str → text/html
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Post:
    path: str
    conversation_id: str
    reply_to: str | None
    headers: dict[str, str]
    json: dict[str, Any]
    status: int
    """The status the script answers with."""
    received_at: float
    """`time.monotonic()` when the request arrived (the fake runs in the test's process: one clock)."""
    answered_at: float | None = None
    """When the answer was written, or found undeliverable; None while the post is pending."""
    completed: bool = False
    """The whole answer was written to a client still connected: the client saw it (a 201 is a delivery). False
    when the client had hung up first (it timed out): what it saw is no answer, so nothing was accepted."""


class FakeConnector:
    """Records every activity POST; replies per conversation from a script (default `201 {"id": ...}`)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.posts: list[Post] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.always: dict[str, Reply] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v3/conversations/{conv}/activities", self._post)
        app.router.add_post("/v3/conversations/{conv}/activities/{reply_to}", self._post)
        self._server = _ThreadedServer(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/"

    def start(self) -> FakeConnector:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def script(self, conversation_id: str, *replies: Reply) -> None:
        with self._lock:
            self.scripts.setdefault(conversation_id, []).extend(replies)

    def delivered(self, conversation_id: str | None = None) -> list[Post]:
        """Posts answered 201 to a client that received the answer."""
        with self._lock:
            return [p for p in self.posts if p.status == 201 and p.completed and
                    (conversation_id is None or p.conversation_id == conversation_id)]

    def pending(self) -> list[Post]:
        """Posts still waiting for their answer to be written."""
        with self._lock:
            return [p for p in self.posts if p.answered_at is None]

    def attempts(self, conversation_id: str) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.conversation_id == conversation_id]

    async def _post(self, request: web.Request) -> web.Response:
        conv = request.match_info["conv"]
        body = await request.json()
        with self._lock:
            queue = self.scripts.get(conv)
            reply = queue.pop(0) if queue else self.always.get(conv, Reply())
            post = Post(request.path, conv, request.match_info.get("reply_to"), dict(request.headers), body,
                        reply.status, time.monotonic())
            self.posts.append(post)
        try:
            delay = reply.delay or self.delay
            if delay:
                await asyncio.sleep(delay)
            if reply.status == 201:
                response = web.json_response({"id": f"activity-{next(self._ids)}"}, status=201)
            elif isinstance(reply.body, str):
                response = web.Response(text=reply.body, status=reply.status, content_type="text/html",
                                        headers=reply.headers)
            else:
                response = web.json_response(reply.body if reply.body is not None else {}, status=reply.status,
                                             headers=reply.headers)
            transport = request.transport
            if transport is None or transport.is_closing():
                return response  # the client hung up (timed out) before the answer: it saw none
            try:
                await response.prepare(request)
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                return response
            post.completed = True
            return response
        finally:
            with self._lock:
                post.answered_at = time.monotonic()


PUBLIC_CLOUD_LOGIN_HOST = "login.microsoftonline.com"
"""The Bot Framework SDK's public-cloud token authority host (`AuthenticationConstants`)."""


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and the public-cloud login host (reached through `CloudLoginProxy`), and its
    key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName(PUBLIC_CLOUD_LOGIN_HOST)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeTokenEndpoint:
    """OIDC discovery + client-credentials token endpoint over HTTPS, checking the client secret."""

    def __init__(self, directory: Path, secret: str) -> None:
        import ssl

        self.secret = secret
        self.assertion = "federated-service-account-token"  # what a workload identity token file holds
        self.token_requests = 0
        self.grants: list[dict[str, str]] = []
        self.cert, key = self_signed(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        app = web.Application()
        app.router.add_get("/{tail:.*}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{tail:.*}/openid-configuration", self._discovery)
        app.router.add_post("/{tail:.*}/token", self._token)
        self._server = _ThreadedServer(app, context)
        self.on_token: Callable[[], Awaitable[None]] | None = None

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self._server.port}"

    @property
    def login_url(self) -> str:
        return f"{self.base}/adfs"

    def start(self) -> FakeTokenEndpoint:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    async def _discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tail"].split("/")[0]
        base = f"https://{request.host}"  # the host the client asked for (the public cloud's, through the proxy)
        return web.json_response({
            "issuer": f"{base}/{tenant}",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2/token",
        })

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if self.on_token is not None:
            await self.on_token()
        grant = {k: str(v) for k, v in form.items()
                 if k in ("client_id", "grant_type", "scope", "client_assertion_type")}
        # the authority the client used: host, path, and the tenant (the path's first segment)
        self.grants.append({**grant, "host": request.host, "path": request.path,
                            "tenant": request.match_info["tail"].split("/")[0]})
        if form.get("client_secret") != self.secret and form.get("client_assertion") != self.assertion:
            return web.json_response({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client "
                                      "secret provided."}, status=401)
        return web.json_response({"access_token": f"token-{self.token_requests}", "token_type": "Bearer",
                                  "expires_in": 3600})


class CloudLoginProxy:
    """An HTTPS proxy (`CONNECT` only) that tunnels every connection to the local token endpoint, whatever host it
    names, and records the `host:port` each tunnel asked for. With `HTTPS_PROXY` pointing here, the SDK's own
    public-cloud authority (no custom login URL) is exercised on this machine: nothing is resolved or sent elsewhere.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.tunnels: list[str] = []
        self.refused: list[str] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, *_ = head.split(" ", 2)
            if method != "CONNECT":
                self.refused.append(head.splitlines()[0])
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(target)
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def start(self) -> CloudLoginProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tunnels):
                task.cancel()
            await asyncio.gather(*self._tunnels, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def main() -> None:
    """`python -m tests.worker.fakes [--delay S]`: serve a fake Bot Connector until killed; prints its URL."""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    connector = FakeConnector(delay=args.delay).start()
    print(connector.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    connector.stop()


if __name__ == "__main__":
    main()
