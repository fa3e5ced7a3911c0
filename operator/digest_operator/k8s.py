"""The only module that talks to the Kubernetes API: get, list, watch, server-side apply with a fixed field manager,
delete.

It reuses Kopf's `ConnectionInfo` (from `kopf.login_with_service_account` / `kopf.login_with_kubeconfig`, or a test's
login), so the operator has one authentication path. Errors map to `ApiError`; `transient` tells 409/429/5xx apart.
Not every answer is JSON: the API server answers a path it does not serve (an API group, version or kind that is not
installed, e.g. a CRD missing or not yet established) with `404 page not found` as plain text, and proxies and load
balancers in front of it answer with HTML or text. `response_error` and `response_body` turn any body into an
`ApiError` or a dict; no decoding error escapes.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
CONNECTIONS = 32
"""Connections for requests (watches have their own pool); twice runtime.CONCURRENT_RECONCILES."""

RequestObserver = Callable[[str, int], None]
"""Called with (method, HTTP status or 0 for a connection error) after every request."""


INVALID_RESPONSE = "InvalidResponse"
"""The reason of an `ApiError` for a success answer whose body is not a JSON object (a proxy in between, typically)."""

_TEXT_LIMIT = 200


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None, *,
                 not_served: bool = False) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.not_served = not_served
        """The API server serves nothing at the path (a 404 that is not a Status object): the API group, version or
        kind is not installed (e.g. its CRD is missing or not established yet). A 404 for a missing object or
        namespace is a Status object and leaves this False."""

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES or self.status == 0 or self.reason == INVALID_RESPONSE


def _json_object(payload: bytes) -> dict[str, Any] | None:
    """`payload` as a JSON object, or None if it is anything else (text, HTML, a JSON number, broken bytes)."""
    try:
        decoded = json.loads(payload)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError
        return None
    return decoded if isinstance(decoded, dict) else None


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace").strip()[:_TEXT_LIMIT]


def _reason_phrase(status: int) -> str:
    """The HTTP reason phrase in the CamelCase of a Kubernetes Status reason: 404 → NotFound."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    return "".join(word[:1].upper() + word[1:] for word in phrase.replace("-", " ").split())


def _retry_after(value: str | None) -> float | None:
    return float(value) if value and value.isdigit() else None


def response_error(status: int, payload: bytes, retry_after: str | None = None) -> ApiError:
    """The `ApiError` for an error answer (status ≥ 400): a Status object's reason and message, else the body as text.

    A 404 without a Status object comes from the API server's router, not from a resource handler: nothing is
    served at the path (`not_served`).
    """
    decoded = _json_object(payload) if payload else None
    if decoded is not None and (decoded.get("kind") == "Status" or "reason" in decoded or "message" in decoded):
        return ApiError(status, str(decoded.get("reason") or _reason_phrase(status)),
                        str(decoded.get("message") or _text(payload)), retry_after=_retry_after(retry_after))
    return ApiError(status, _reason_phrase(status), _text(payload) or f"HTTP {status} without a body",
                    retry_after=_retry_after(retry_after), not_served=status == 404)


def response_body(status: int, payload: bytes) -> dict[str, Any]:
    """The JSON object of a success answer; an empty body is {}. Anything else is a transient `ApiError`."""
    if not payload:
        return {}
    decoded = _json_object(payload)
    if decoded is None:
        raise ApiError(status, INVALID_RESPONSE, f"the answer is not a JSON object: {_text(payload)!r}")
    return decoded


def _watch_event(status: int, line: bytes) -> dict[str, Any]:
    event = _json_object(line)
    if event is None:
        raise ApiError(status, INVALID_RESPONSE, f"a watch event is not JSON: {_text(line)!r}")
    return event


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name is not None:
        base += f"/{quote(name, safe='')}"
    return base


def _ssl_context(info: kopf.ConnectionInfo, workdir: Path) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context()
    if info.ca_path:
        context.load_verify_locations(cafile=str(info.ca_path))
    elif info.ca_data:
        data = info.ca_data if isinstance(info.ca_data, str) else info.ca_data.decode()
        context.load_verify_locations(cadata=base64.b64decode(data).decode() if "BEGIN" not in data else data)
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        cert, key = workdir / "client.crt", workdir / "client.key"
        for path, blob in ((cert, info.certificate_data), (key, info.private_key_data)):
            raw = blob.encode() if isinstance(blob, str) else blob
            path.write_bytes(raw if b"BEGIN" in raw else base64.b64decode(raw))
            path.chmod(0o600)
    if cert:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
    return context


class KubeClient:
    """A small async Kubernetes client over aiohttp."""

    def __init__(
        self,
        credentials: Callable[[], kopf.ConnectionInfo],
        *,
        field_manager: str,
        request_timeout: float = 30.0,
        observer: RequestObserver | None = None,
    ) -> None:
        self._credentials = credentials
        self.field_manager = field_manager
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._observer = observer
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="digest-operator-")
        self._lock = asyncio.Lock()

    async def _connect(self, *, refresh: bool = False) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        async with self._lock:
            if refresh or self._session is None or self._info is None:
                if self._session is not None:
                    await self._session.close()
                if self._watch_session is not None:
                    await self._watch_session.close()
                info = await asyncio.to_thread(self._credentials)
                headers = {"User-Agent": "digest-operator", "Accept": "application/json"}
                if info.token:
                    headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
                auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
                tls = _ssl_context(info, Path(self._workdir.name))
                connector = aiohttp.TCPConnector(ssl=tls, limit=CONNECTIONS)
                self._session = aiohttp.ClientSession(
                    headers=headers, auth=auth, connector=connector, timeout=self._timeout,
                )
                # watches hold their connection for minutes: a pool of their own, so they never starve requests
                self._watch_session = aiohttp.ClientSession(
                    headers=headers, auth=auth, connector=aiohttp.TCPConnector(ssl=tls, limit=0),
                )
                self._info = info
            return self._session, self._info

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None
        self._workdir.cleanup()

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """Send one request; returns the JSON body, or None for 404 on GET. Re-authenticates once on 401."""
        for attempt in (1, 2):
            session, info = await self._connect(refresh=attempt == 2)
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                async with session.request(
                    method, info.server.rstrip("/") + path, params=params, data=data, headers=headers,
                ) as response:
                    status = response.status
                    payload = await response.read()
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._observe(method, 0)
                raise ApiError(0, "ConnectionError", f"{method} {path}: {exc!r}") from exc
            if status == 401 and attempt == 1:
                self._observe(method, status)
                continue
            if status == 404 and method == "GET":
                self._observe(method, 200)  # an absent object is an answer, not an API error
                return None
            self._observe(method, status)
            if status >= 400:
                raise response_error(status, payload, retry_after)
            return response_body(status, payload)
        raise AssertionError("unreachable")

    def _observe(self, method: str, status: int) -> None:
        if self._observer is not None:
            self._observer(method, status)

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return await self.request("GET", resource_path(api_version, plural, namespace, name))

    async def list(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str,
    ) -> list[dict[str, Any]]:
        """The objects matching `label_selector` (one page: a Deployment's pods, a pipeline's monitor pods)."""
        result = await self.request("GET", resource_path(api_version, plural, namespace),
                                    params={"labelSelector": label_selector})
        return list((result or {}).get("items") or [])

    async def list_all(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str, page: int = 500,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every object matching `label_selector`, in pages of `page`, and the list's resourceVersion (to watch
        from). An expired continue token (410) is an `ApiError`: the caller lists again."""
        path = resource_path(api_version, plural, namespace)
        items: builtins.list[dict[str, Any]] = []
        params = {"labelSelector": label_selector, "limit": str(page)}
        version = ""
        while True:
            result = await self.request("GET", path, params=params)
            if result is None:  # 404 on the collection: the kind is not served
                raise ApiError(404, "NotFound", f"GET {path}: the server does not serve it", not_served=True)
            meta = result.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            items.extend(result.get("items") or [])
            token = meta.get("continue")
            if not token:
                return items, version
            params = {**params, "continue": str(token)}

    async def watch(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str, resource_version: str,
        *, server_timeout: int, client_timeout: float,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch from `resource_version` (bookmarks included) until the server ends it after
        `server_timeout` seconds; a stream silent for `client_timeout` seconds is given up (`ApiError` 0, like a
        dropped connection). An error answer is an `ApiError` (410 Gone: the version is too old, list again)."""
        await self._connect()
        session, info = self._watch_session, self._info
        assert session is not None
        assert info is not None
        params = {"watch": "true", "allowWatchBookmarks": "true", "labelSelector": label_selector,
                  "resourceVersion": resource_version, "timeoutSeconds": str(max(1, server_timeout))}
        path = resource_path(api_version, plural, namespace)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout.total, sock_read=client_timeout)
        try:
            async with session.get(info.server.rstrip("/") + path, params=params, timeout=timeout) as response:
                self._observe("WATCH", response.status)
                if response.status >= 400:
                    raise response_error(response.status, await response.read(),
                                         response.headers.get("Retry-After"))
                buffer = b""
                async for chunk in response.content.iter_any():  # events are lines, of any length
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _watch_event(response.status, line)
                if buffer.strip():
                    yield _watch_event(response.status, buffer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "ConnectionError", f"WATCH {path}: {exc!r}") from exc

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        """Server-side apply `obj` as this operator's field manager, taking over conflicting fields (drift repair)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], plural, meta.get("namespace"), meta["name"])
        result = await self.request(
            "PATCH", path, params={"fieldManager": self.field_manager, "force": "true"}, body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )
        return result or {}

    async def patch_status(
        self, api_version: str, plural: str, namespace: str | None, name: str, patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON merge patch of the status subresource; None when the object is gone.

        With `resource_version`, the write fails with 409 if someone changed the object since it was read (so the
        conditions list, which a merge patch replaces whole, never drops another writer's update).
        """
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self.request(
                "PATCH", resource_path(api_version, plural, namespace, name) + "/status",
                body=body, content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        """Delete with a uid precondition (never a same-named successor); background propagation."""
        body = {
            "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            await self.request("DELETE", resource_path(api_version, plural, namespace, name), body=body)
        except ApiError as exc:
            if exc.status != 404:
                raise
