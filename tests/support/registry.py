"""A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution) on loopback, started per test.

Modes: anonymous, htpasswd basic auth, and bearer tokens (the registry's own `token` auth, trusting a self-signed
certificate whose key signs the JWTs of `TokenServer`, a small token endpoint in the test's event loop). Images
are pushed through the registry HTTP API (blobs, then manifests; an OCI index with two platforms for multi-arch),
so no Docker is needed. `.ci/run` installs the `docker-registry` and `apache2-utils` (htpasswd) packages.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import aiohttp.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from digest_operator.registry import OCI_INDEX, OCI_MANIFEST, parse_challenge

REGISTRY_BINARY = "docker-registry"
USER, PASSWORD = "pusher", "s3cret-pass"
Mode = Literal["anonymous", "htpasswd", "token"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry JWTs (RS256, `x5c` header) to clients that present USER/PASSWORD with basic auth."""

    service = "test-registry"
    issuer = "test-token-issuer"

    def __init__(self, workdir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.root_bundle = workdir / "token-root.pem"
        self.root_bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.scopes: list[str] = []
        self._runner: aiohttp.web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def _jwt(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("", "", "")
            if kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": USER, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    async def _token(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.scopes.extend(request.query.getall("scope", []))
        expected = aiohttp.encode_basic_auth(USER, PASSWORD)
        if request.headers.get("Authorization") != expected:
            return aiohttp.web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        if request.query.get("service") != self.service:
            return aiohttp.web.json_response({"errors": [{"code": "DENIED"}]}, status=400)
        return aiohttp.web.json_response({"token": self._jwt(request.query.getall("scope", []))})

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_get("/token", self._token)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Registry:
    """One `docker-registry serve` process; `host` is what image references use (`127.0.0.1:<port>`)."""

    workdir: Path
    mode: Mode = "anonymous"
    port: int = field(default_factory=free_port)
    token_server: TokenServer | None = None
    process: subprocess.Popen[bytes] | None = None
    tls: tuple[Path, Path] | None = None
    """(certificate, key): serve HTTPS instead of HTTP."""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> Path:
        auth: dict[str, Any] = {}
        if self.mode == "htpasswd":
            htpasswd = self.workdir / "htpasswd"
            out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True)
            htpasswd.write_bytes(out.stdout)
            auth = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
        elif self.mode == "token":
            assert self.token_server is not None
            auth = {"token": {"realm": self.token_server.realm, "service": TokenServer.service,
                              "issuer": TokenServer.issuer, "rootcertbundle": str(self.token_server.root_bundle)}}
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": uuid.uuid4().hex,
                     **({"tls": {"certificate": str(self.tls[0]), "key": str(self.tls[1])}} if self.tls else {})},
            **({"auth": auth} if auth else {}),
        }
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / "registry.log", "ab") as log:
            return subprocess.Popen([binary, "serve", str(self._config())], stdout=log, stderr=log,
                                    env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})

    async def start(self) -> Registry:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry; .ci/run does)")
        if self.mode == "token" and self.token_server is None:
            self.token_server = TokenServer(self.workdir)
            await self.token_server.start()
        self.process = self._spawn(binary)
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"docker-registry exited: {(self.workdir / 'registry.log').read_text()}")
                try:
                    async with session.get(f"{self.url}/v2/") as response:
                        if response.status in (200, 401):
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("docker-registry did not start")
                await asyncio.sleep(0.05)

    def stop_process(self) -> None:
        """Stop the registry (its data stays; `start()` brings it back on the same port)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    async def close(self) -> None:
        self.stop_process()
        if self.token_server is not None:
            await self.token_server.stop()

    # --- pushing through the HTTP API -------------------------------------------------------------------------

    async def _request(self, session: aiohttp.ClientSession, method: str, url: str, *, scope: str,
                       **kwargs: Any) -> aiohttp.ClientResponse:
        """One request with this registry's auth (answering a 401 challenge once)."""
        headers = dict(kwargs.pop("headers", {}))
        response = await session.request(method, url, headers=headers, **kwargs)
        if response.status != 401 or self.mode == "anonymous":
            return response
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        response.release()
        if scheme == "basic":
            headers["Authorization"] = aiohttp.encode_basic_auth(USER, PASSWORD)
        else:
            async with session.get(params["realm"], params={"service": params["service"], "scope": scope},
                                   headers={"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}) as token:
                assert token.status == 200, await token.text()
                headers["Authorization"] = f"Bearer {(await token.json())['token']}"
        return await session.request(method, url, headers=headers, **kwargs)

    @staticmethod
    def _pusher() -> aiohttp.ClientSession:
        """The test's own pushes skip TLS verification (the operator's client is the one under test)."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))

    async def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        scope = f"repository:{repository}:pull,push"
        async with self._pusher() as session:
            started = await self._request(session, "POST", f"{self.url}/v2/{repository}/blobs/uploads/", scope=scope)
            assert started.status == 202, await started.text()
            location = started.headers["Location"]
            started.release()
            if location.startswith("/"):
                location = self.url + location
            sep = "&" if "?" in location else "?"
            done = await self._request(session, "PUT", f"{location}{sep}digest={digest}", scope=scope, data=data,
                                       headers={"Content-Type": "application/octet-stream"})
            assert done.status == 201, await done.text()
            done.release()
        return digest

    async def push_manifest(self, repository: str, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        async with self._pusher() as session:
            response = await self._request(
                session, "PUT", f"{self.url}/v2/{repository}/manifests/{reference}",
                scope=f"repository:{repository}:pull,push", data=body,
                headers={"Content-Type": manifest["mediaType"]})
            assert response.status == 201, await response.text()
            digest = response.headers["Docker-Content-Digest"]
            response.release()
        assert digest == sha256(body)
        return digest

    async def push_image(self, repository: str, tag: str, *, content: str = "v1",
                         media_type: str = OCI_MANIFEST) -> str:
        """A single-platform image (one config blob, one layer); returns its manifest digest."""
        layer = f"layer of {repository}:{tag} {content}".encode()
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                             "diff_ids": [sha256(layer)]}, "config": {"Labels": {"content": content}}}).encode()
        blob_type = ("application/vnd.oci.image.layer.v1.tar" if media_type == OCI_MANIFEST
                     else "application/vnd.docker.image.rootfs.diff.tar.gzip")
        config_type = ("application/vnd.oci.image.config.v1+json" if media_type == OCI_MANIFEST
                       else "application/vnd.docker.container.image.v1+json")
        manifest = {
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": await self.push_blob(repository, config),
                       "size": len(config)},
            "layers": [{"mediaType": blob_type, "digest": await self.push_blob(repository, layer),
                        "size": len(layer)}],
        }
        return await self.push_manifest(repository, tag, manifest)

    async def push_index(self, repository: str, tag: str, *, content: str = "v1",
                         media_type: str = OCI_INDEX) -> tuple[str, list[str]]:
        """A multi-arch image (an OCI index, or a Docker manifest list) with linux/amd64 and linux/arm64 images;
        returns (index digest, platform digests)."""
        children: list[dict[str, Any]] = []
        for arch in ("amd64", "arm64"):
            layer = f"{arch} layer of {repository}:{tag} {content}".encode()
            config = json.dumps({"architecture": arch, "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}).encode()
            manifest = {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": await self.push_blob(repository, config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": await self.push_blob(repository, layer), "size": len(layer)}],
            }
            body = json.dumps(manifest, separators=(",", ":")).encode()
            digest = await self.push_manifest(repository, sha256(body), manifest)
            children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                             "platform": {"architecture": arch, "os": "linux"}})
        index = {"schemaVersion": 2, "mediaType": media_type, "manifests": children}
        return await self.push_manifest(repository, tag, index), [c["digest"] for c in children]


class StrippingProxy:
    """A reverse proxy in front of a registry that drops `Docker-Content-Digest` (as some registries do)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.methods: list[str] = []
        self._runner: aiohttp.web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.methods.append(request.method)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read(),
                allow_redirects=False) as response:
            body = await response.read()
            kept = {k: v for k, v in response.headers.items()
                    if k.lower() not in ("docker-content-digest", "content-length", "transfer-encoding")}
            return aiohttp.web.Response(status=response.status, body=body if request.method != "HEAD" else None,
                                        headers=kept)

    async def start(self) -> StrippingProxy:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
