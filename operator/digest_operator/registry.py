"""Thin OCI distribution client: resolve a tag to the digest the registry serves for it.

`HEAD /v2/<repo>/manifests/<tag>` with the Accept types for OCI index, Docker manifest list, OCI and Docker v2
manifests (so a multi-arch image answers with its index, which is what gets pinned), reading
`Docker-Content-Digest`; without that header (or when HEAD is refused) a GET whose body is hashed with sha256.
Authentication: anonymous, `Basic` challenges and the `Bearer` token flow (`WWW-Authenticate: Bearer realm,service,
scope`), with credentials from the pipeline's pull secrets. Every failure is a `RegistryError` with a condition
reason: RegistryUnavailable, TagNotFound, Unauthorized or RegistryNotAllowed.

What a pipeline author can make the operator fetch is bounded: only registries of `allowed_registries` (when set),
token realms over https (plain http only on the host of a registry listed as insecure), pull-secret credentials sent
to a realm only on the registry's own host name (or `token_hosts`, and Docker Hub's `auth.docker.io`), no redirects
from a token endpoint, and every body read capped.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from digest_api.imageref import ImageRef

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})

DOCKER_HUB_TOKEN_HOST = "auth.docker.io"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The distribution spec's manifest size limit that registries enforce."""
MAX_TOKEN_BYTES = 256 * 1024

Reason = Literal["RegistryUnavailable", "TagNotFound", "Unauthorized", "RegistryNotAllowed"]
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class RegistryError(Exception):
    """A resolution that failed; `reason` is the ImagePinned condition reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Resolved:
    digest: str
    media_type: str | None

    @property
    def multi_arch(self) -> bool:
        return self.media_type in INDEX_TYPES


def split_name(name: str) -> tuple[str, str]:
    """(registry host, repository) of an image name, with Docker Hub's defaults."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = DOCKER_HUB, name
    if host in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return host, repository


def api_host(host: str) -> str:
    return DOCKER_HUB_API if host == DOCKER_HUB else host


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` → ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(params)}


def hostname(netloc: str) -> str:
    """The host name of a `host[:port]` (an IPv6 literal keeps its brackets off)."""
    return (urlsplit(f"//{netloc}").hostname or netloc).lower()


class RegistryClient:
    """Resolves tags over HTTPS (verified against the system CAs and `ca_file`); plain HTTP for `insecure_hosts`,
    e.g. a registry on loopback. `allowed_registries` (empty: any) bounds which registries it contacts;
    `token_hosts` are extra host names a registry's token realm may have and still receive credentials."""

    def __init__(
        self, *, insecure_hosts: Collection[str] = (), timeout: float = 10.0, ca_file: str | None = None,
        allowed_registries: Collection[str] = (), token_hosts: Collection[str] = (),
    ) -> None:
        self._insecure = frozenset(insecure_hosts)
        self._allowed = frozenset(split_name(f"{h}/x")[0] for h in allowed_registries)
        self._token_hosts = frozenset(h.lower() for h in token_hosts)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = ssl.create_default_context()  # the system's CAs, plus `ca_file` (a private registry CA)
            if self._ca_file:
                context.load_verify_locations(cafile=self._ca_file)
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": "digest-operator"},
                connector=aiohttp.TCPConnector(ssl=context),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _base(self, host: str) -> str:
        scheme = "http" if host in self._insecure else "https"
        return f"{scheme}://{api_host(host)}"

    async def resolve(self, image: ImageRef, credentials: Credentials | None = None) -> Resolved:
        """The digest the registry serves for `image`'s tag (`latest` when it has none)."""
        host, repository = split_name(image.name)
        tag = image.tag or "latest"
        if self._allowed and host not in self._allowed:
            raise RegistryError("RegistryNotAllowed", f"registry {host} is not allowed (the operator contacts only "
                                f"{', '.join(sorted(self._allowed))}: DIGEST_OPERATOR_ALLOWED_REGISTRIES)")
        url = f"{self._base(host)}/v2/{repository}/manifests/{tag}"
        where = f"{host}/{repository}:{tag}"
        try:
            return await self._resolve(url, where, host, repository, credentials)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError("RegistryUnavailable", f"{where}: registry not reachable: {exc!r}") from exc

    async def _resolve(self, url: str, where: str, host: str, repository: str,
                       credentials: Credentials | None) -> Resolved:
        headers = {"Accept": ACCEPT}
        status, digest, media_type, challenge = await self._head(url, headers)
        if status == 401:
            headers["Authorization"] = await self._authorize(challenge, where, host, repository, credentials)
            status, digest, media_type, _ = await self._head(url, headers)
        if status in (200, 401, 403, 404) or status >= 500:
            self._check(status, where, credentials)
        if status == 200 and digest is not None:
            return Resolved(digest, media_type)
        # No Docker-Content-Digest, or HEAD not supported: GET the manifest and hash what was served.
        async with self._http().get(url, headers=headers) as response:
            self._check(response.status, where, credentials)
            body = await _read_capped(response, MAX_MANIFEST_BYTES, f"{where}: the manifest")
            return Resolved("sha256:" + hashlib.sha256(body).hexdigest(), _media_type(response))

    async def _head(self, url: str, headers: dict[str, str]) -> tuple[int, str | None, str | None, str]:
        async with self._http().head(url, headers=headers, allow_redirects=True) as response:
            digest = response.headers.get("Docker-Content-Digest")
            if digest is not None and not _DIGEST.fullmatch(digest):
                digest = None  # not a sha256 digest we can pin; hash the body instead
            challenge = response.headers.get("WWW-Authenticate", "")
            return response.status, digest, _media_type(response), challenge

    @staticmethod
    def _check(status: int, where: str, credentials: Credentials | None) -> None:
        if status in (401, 403):
            who = f"as {credentials.username}" if credentials else "anonymously (no matching imagePullSecrets)"
            raise RegistryError("Unauthorized", f"{where}: the registry refused access {who} ({status})")
        if status == 404:
            raise RegistryError("TagNotFound", f"{where}: no such tag or repository in the registry")
        if status >= 400:
            raise RegistryError("RegistryUnavailable", f"{where}: the registry answered {status}")

    def _realm(self, realm: str, where: str, host: str, credentials: Credentials | None) -> bool:
        """Check the token realm a registry named; whether credentials may be sent to it."""
        parts = urlsplit(realm)
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise RegistryError("RegistryUnavailable", f"{where}: the registry names an invalid token realm")
        registry_name = hostname(api_host(host))
        if parts.scheme == "http" and not (parts.netloc in self._insecure or (
                host in self._insecure and parts.hostname == registry_name)):
            raise RegistryError("RegistryUnavailable", f"{where}: the registry's token realm {parts.hostname} is "
                                "plain http; only https realms are used (or the host of an insecure registry)")
        own = {registry_name, *self._token_hosts, *((DOCKER_HUB_TOKEN_HOST,) if host == DOCKER_HUB else ())}
        if credentials is not None and parts.hostname not in own:
            raise RegistryError("Unauthorized", f"{where}: the registry's token realm is on another host "
                                f"({parts.hostname}); credentials go only to {registry_name} or a host listed in "
                                "DIGEST_OPERATOR_REGISTRY_TOKEN_HOSTS")
        return credentials is not None

    async def _authorize(self, challenge: str, where: str, host: str, repository: str,
                         credentials: Credentials | None) -> str:
        """The Authorization header answering a 401's `WWW-Authenticate` challenge."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if credentials is None:
                self._check(401, where, None)
            assert credentials is not None
            return aiohttp.encode_basic_auth(credentials.username, credentials.password)
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError("Unauthorized", f"{where}: unsupported authentication challenge {scheme!r}")
        send = self._realm(params["realm"], where, host, credentials)
        query = {"scope": params.get("scope") or f"repository:{repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": aiohttp.encode_basic_auth(credentials.username, credentials.password)
                   } if send and credentials else {}
        async with self._http().get(params["realm"], params=query, headers=headers,
                                    allow_redirects=False) as response:
            if response.status in (401, 403):
                self._check(response.status, f"{where} (token endpoint)", credentials)
            if response.status >= 300:
                raise RegistryError("RegistryUnavailable",
                                    f"{where}: the token endpoint answered {response.status}")
            body = await _read_capped(response, MAX_TOKEN_BYTES, f"{where}: the token endpoint's answer")
        try:
            payload = json.loads(body)
        except ValueError:
            raise RegistryError("RegistryUnavailable", f"{where}: the token endpoint's answer is not JSON") from None
        token = (payload.get("token") or payload.get("access_token")) if isinstance(payload, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryError("Unauthorized", f"{where}: the token endpoint returned no token")
        return f"Bearer {token}"


async def _read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RegistryError("RegistryUnavailable", f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(response: aiohttp.ClientResponse) -> str | None:
    value = response.headers.get("Content-Type")
    return value.split(";")[0].strip() if value else None
