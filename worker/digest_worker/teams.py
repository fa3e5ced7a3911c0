"""Proactive Teams delivery with the Bot Framework SDK (CloudAdapter + ConfigurationBotFrameworkAuthentication).

Posts with `send_to_conversation` to the stored conversation reference (never a reply to the synthetic activity id),
caches credentials and tokens, and fetches tokens in a thread so the event loop never blocks on the token endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import requests
from azure.core.exceptions import DeserializationError
from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity, Attachment, ChannelAccount, ConversationAccount, ConversationReference
from botframework.connector.aio import ConnectorClient
from botframework.connector.aiohttp_bf_pipeline import AsyncBfPipeline
from botframework.connector.auth import ServiceClientCredentialsFactory
from botframework.connector.bot_framework_sdk_client_async import BotFrameworkConnectorConfiguration
from msrest.authentication import Authentication
from msrest.exceptions import ClientRequestError, HttpOperationError
from msrest.pipeline import SansIOHTTPPolicy
from msrest.pipeline.aiohttp import AioHTTPSender
from msrest.pipeline.universal import UserAgentPolicy
from msrest.universal_http import ClientRequest
from msrest.universal_http import requests as msrest_requests
from msrest.universal_http.aiohttp import AioHttpClientResponse
from msrest.universal_http.async_abc import AsyncHTTPSender as AsyncHTTPDriver

from digest_api import contract
from digest_worker import failures
from digest_worker.config import WorkerConfig
from digest_worker.db.store import StoredReference
from digest_worker.teams_errors import classify_status, parse_retry_after

log = logging.getLogger(__name__)
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
# A connector client (and the token it carries) is reused this long per service URL. MSAL hands out a cached token
# only while it has more than 5 minutes left, so a client is never used with an expired token.
CONNECTOR_REUSE_SECONDS = 240.0


def _fast_msrest_retry_policy() -> None:
    """msrest 0.7.1 builds every client's retry policy with `i not in safe_codes` for 999 codes over a 500-item list:
    ~2.7 ms of CPU per client, and each proactive send builds two clients (connector + user token). Same values as a
    frozenset make it ~0.05 ms; the resulting policy is identical (tests/unit/worker/test_teams_errors.py)."""
    policy = msrest_requests.ClientRetryPolicy
    if not isinstance(policy.safe_codes, frozenset):
        policy.safe_codes = frozenset(policy.safe_codes)  # type: ignore[assignment]


_fast_msrest_retry_policy()


class BearerToken(SansIOHTTPPolicy, Authentication):  # type: ignore[type-arg]
    """Credentials holding a token fetched beforehand: signing a request never calls the token endpoint.

    A pipeline policy (it sets the header on each request, whatever the transport) as well as the `requests`
    session signer msrest's older interface expects. `None`: authentication disabled (no header)."""

    def __init__(self, token: str | None) -> None:
        self._header = f"Bearer {token}" if token else None

    def on_request(self, request: Any, **kwargs: Any) -> None:
        if self._header is not None:
            request.http_request.headers["Authorization"] = self._header

    def signed_session(self, session: requests.Session | None = None) -> requests.Session:
        session = session or requests.Session()
        if self._header is not None:
            session.headers["Authorization"] = self._header
        return session


class AiohttpDriver(AsyncHTTPDriver):
    """An msrest HTTP driver on one aiohttp session (msrest 0.7.1's own aiohttp driver sends neither headers nor
    body), with a total timeout per request. Redirects are not followed: the request, its body and the bot's token
    go to the allowed service URL only (the Bot Connector does not redirect posts)."""

    def __init__(self, timeout: float) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def __aexit__(self, *exc_details: Any) -> None:
        await self._session.close()

    async def send(self, request: ClientRequest, **config: Any) -> AioHttpClientResponse:
        result = await self._session.request(request.method, request.url, headers=request.headers,
                                             data=request.data, allow_redirects=False)
        response = AioHttpClientResponse(request, result)
        await response.load_body()
        return response


def aiohttp_connector_client(sdk_client: Any, service_url: str, timeout: float) -> tuple[Any, AioHTTPSender]:
    """The connector client the SDK's connector factory built (its credentials, audience and user agent), on msrest's
    aiohttp transport instead of `requests` run in a thread per post (the SDK's own `AsyncBfPipeline` with a custom
    sender, as `BotFrameworkConnectorConfiguration` allows). Returns the client and its sender (to close it)."""
    sender = AioHTTPSender(cast(Any, AiohttpDriver(timeout)))
    configuration = BotFrameworkConnectorConfiguration(sdk_client.config.credentials, service_url, sender=sender)
    configuration.user_agent_policy = UserAgentPolicy(sdk_client.config.user_agent)
    configuration.custom_pipeline = AsyncBfPipeline(configuration)
    client = ConnectorClient(sdk_client.config.credentials, base_url=service_url,
                             custom_configuration=configuration)
    # msrest re-validates every model it serializes against its schema (~0.25 ms per post); the activities posted
    # here are built by `message_model` from our own rendering, so the check has nothing to find
    client.conversations._serialize.client_side_validation = False
    return client, sender


async def _close(sender: AioHTTPSender) -> None:
    await sender.__aexit__(None, None, None)  # type: ignore[no-untyped-call]


_MESSAGE_KEYS = {"type": "type", "summary": "summary", "text": "text", "attachmentLayout": "attachment_layout"}


def message_model(activity: dict[str, Any]) -> Activity:
    """The `Activity` of a message activity dict: built directly for the shape `card.message_activity` renders
    (msrest's generic deserialisation walks the whole card), through the SDK's deserialiser for anything else."""
    attachments = activity.get("attachments", [])
    if set(activity) - {*_MESSAGE_KEYS, "attachments"} or any(set(a) - {"contentType", "content"}
                                                                for a in attachments):
        return Activity().deserialize(activity)
    fields = {name: activity[key] for key, name in _MESSAGE_KEYS.items() if key in activity}
    return Activity(**fields, attachments=[Attachment(content_type=a.get("contentType"), content=a.get("content"))
                                           for a in attachments] or None)


class AzureIdentityAppCredentials:
    """A Bot Framework token from azure-identity (AKS workload identity, or managed identity off AKS)."""

    def __init__(self, client_id: str, tenant_id: str | None, authority: str | None = None) -> None:
        from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

        if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
            # `authority` (a private cloud, or a local endpoint in tests) disables instance discovery, which would
            # otherwise ask login.microsoftonline.com about that host
            extra: dict[str, Any] = {"authority": authority, "disable_instance_discovery": True} if authority else {}
            self._credential: Any = WorkloadIdentityCredential(client_id=client_id, tenant_id=tenant_id or None,
                                                               **extra)
        else:
            self._credential = ManagedIdentityCredential(client_id=client_id)

    def get_access_token(self, force_refresh: bool = False) -> str:
        return str(self._credential.get_token(BOT_FRAMEWORK_SCOPE).token)


class CachingCredentialsFactory(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """Wraps the SDK's credential factory: one credential object per (app, scope, endpoint) — so MSAL's token cache
    is reused — and the token fetched in a worker thread, handed to the connector as a `BearerToken`."""

    def __init__(self, inner: Any, make: Callable[[], Any] | None = None) -> None:
        self._inner = inner
        self._make = make  # overrides the SDK's credential class (azure-identity)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.token_fetches = 0

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(await self._inner.is_valid_app_id(app_id))

    async def is_authentication_disabled(self) -> bool:
        return bool(await self._inner.is_authentication_disabled())

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Authentication:
        if await self.is_authentication_disabled():
            return BearerToken(None)
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        credentials = self._cache.get(key)
        if credentials is None:
            if self._make is not None:
                credentials = self._make()
            else:
                credentials = await self._inner.create_credentials(app_id, oauth_scope, login_endpoint,
                                                                   validate_authority)
            self._cache[key] = credentials
        self.token_fetches += 1
        try:
            token = await asyncio.to_thread(credentials.get_access_token)
        except BaseException:
            self._cache.pop(key, None)
            raise
        return BearerToken(token)


def authority_host(login_url: str) -> str:
    """`https://login.example/tenant` → `https://login.example` (azure-identity wants the host, not the tenant)."""
    parts = urlsplit(login_url)
    return f"{parts.scheme}://{parts.netloc}"


def bot_settings(config: WorkerConfig) -> SimpleNamespace:
    """The attribute names the SDK reads with getattr()."""
    settings = SimpleNamespace(APP_ID=config.teams_app_id, APP_PASSWORD=config.teams_app_password or "",
                               APP_TYPE=config.teams_app_type, APP_TENANTID=config.teams_tenant_id or "")
    if config.teams_login_url:
        settings.TO_CHANNEL_FROM_BOT_LOGIN_URL = config.teams_login_url
    if config.teams_oauth_scope:
        settings.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = config.teams_oauth_scope
    return settings


def conversation_reference(stored: StoredReference) -> ConversationReference:
    ref = ConversationReference().deserialize(stored.reference)
    ref.service_url = stored.service_url
    ref.channel_id = stored.channel_id or ref.channel_id or "msteams"
    if ref.conversation is None:
        ref.conversation = ConversationAccount(id=stored.conversation_id)
    ref.conversation.id = stored.conversation_id
    if stored.tenant_id:
        ref.conversation.tenant_id = stored.tenant_id
    if ref.bot is None and stored.bot_id:
        ref.bot = ChannelAccount(id=stored.bot_id)
    return ref


class TeamsDelivery:
    """Posts message activities proactively; raises `FailureError` classified by HTTP status or error type."""

    def __init__(self, config: WorkerConfig, on_status: Callable[[int | None], None] | None = None) -> None:
        self.config = config
        self.settings = bot_settings(config)
        make = None
        if config.teams_app_type == "UserAssignedMSI":
            app_id, tenant = config.teams_app_id, config.teams_tenant_id
            authority = authority_host(config.teams_login_url) if config.teams_login_url else None

            def make() -> Any:
                return AzureIdentityAppCredentials(app_id, tenant, authority)
        self.credentials = CachingCredentialsFactory(ConfigurationServiceClientCredentialFactory(self.settings), make)
        self.adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(
            self.settings, credentials_factory=self.credentials))
        self.adapter.on_turn_error = None  # errors propagate; never post an error message to the user
        self._not_before = 0.0
        # service URL → (created, ConnectorClient, its aiohttp sender)
        self._connectors: dict[str, tuple[float, Any, AioHTTPSender]] = {}
        self._connector_lock = asyncio.Lock()
        self._retired: dict[asyncio.Task[None], AioHTTPSender] = {}  # replaced clients, closed a timeout later
        self._closing: set[asyncio.Future[None]] = set()
        self._on_status = on_status or (lambda _status: None)

    async def check(self) -> None:
        """The systemic check: can the bot get a token? Raises `FailureError`."""
        try:
            factory = self.adapter.bot_framework_authentication.create_connector_factory(
                self.adapter.create_claims_identity(self.config.teams_app_id))
            await factory.create("https://127.0.0.1/", None)
        except Exception as exc:
            raise classify(exc) from exc

    def check_service_url(self, service_url: str) -> None:
        """Refuse (permanently: the reference will not change by retrying) a service URL outside the allow-list
        before any token is fetched or anything is sent: `Permanent.TeamsServiceUrlNotAllowed`, naming the host."""
        verdict = contract.check_service_url(service_url, self.config.teams_service_urls)
        if not verdict.allowed:
            raise failures.permanent(
                "TeamsServiceUrlNotAllowed",
                f"service URL host {verdict.host or '?'!r} ({verdict.origin}) is not allowed: the bot's token is sent "
                f"only to {contract.TEAMS_SERVICE_URLS} entries "
                f"({', '.join(str(rule) for rule in self.config.teams_service_urls) or 'none'})")

    async def _connector(self, service_url: str) -> Any:
        """The connector client for `service_url`, built by the adapter's connector factory (so the configured
        credentials and audience apply), moved onto the aiohttp transport, and reused for CONNECTOR_REUSE_SECONDS:
        building one per post (what `CloudAdapter.continue_conversation` does, with a user-token client and a
        `requests` session each) cost ~2.5 ms of CPU and a new TCP connection per post."""
        entry = self._connectors.get(service_url)
        if entry is not None and time.monotonic() - entry[0] < CONNECTOR_REUSE_SECONDS:
            return entry[1]
        async with self._connector_lock:
            entry = self._connectors.get(service_url)
            if entry is not None and time.monotonic() - entry[0] < CONNECTOR_REUSE_SECONDS:
                return entry[1]
            factory = self.adapter.bot_framework_authentication.create_connector_factory(
                self.adapter.create_claims_identity(self.config.teams_app_id))
            client, sender = aiohttp_connector_client(await factory.create(service_url, None), service_url,
                                                      self.config.teams_timeout_seconds)
            self._drop(service_url)
            self._connectors[service_url] = (time.monotonic(), client, sender)
            return client

    def _drop(self, service_url: str) -> None:
        """Forget the client of `service_url`; its connections close once posts still using it are over."""
        entry = self._connectors.pop(service_url, None)
        if entry is not None:
            sender = entry[2]
            task = asyncio.create_task(asyncio.sleep(self.config.teams_timeout_seconds + 10))
            self._retired[task] = sender

            def closed(_task: asyncio.Task[None]) -> None:
                if self._retired.pop(task, None) is not None:
                    closing = asyncio.ensure_future(_close(sender))
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)

            task.add_done_callback(closed)

    async def close(self) -> None:
        senders = [entry[2] for entry in self._connectors.values()] + list(self._retired.values())
        self._connectors.clear()
        tasks = list(self._retired)
        self._retired.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._closing, *(_close(s) for s in senders), return_exceptions=True)

    async def send(self, stored: StoredReference, activity: dict[str, Any]) -> str | None:
        """Post `activity` (a message activity dict) into the stored conversation; return the activity id.

        The same request `CloudAdapter.continue_conversation` + `send_to_conversation` makes (the conversation
        reference applied to the activity, never a reply to the synthetic activity id), on a reused connector client.
        """
        delay = self._not_before - time.monotonic()
        if delay > 0:  # a 429 told us to hold off: every send waits, not only the throttled one
            await asyncio.sleep(delay)
        reference = conversation_reference(stored)
        self.check_service_url(reference.service_url)
        try:
            client = await self._connector(reference.service_url)
            message = message_model(activity)
            message = TurnContext.apply_conversation_reference(message, reference)
            message.reply_to_id = None
            if stored.tenant_id:
                message.channel_data = {"tenant": {"id": stored.tenant_id}}
            response = await asyncio.wait_for(
                client.conversations.send_to_conversation(reference.conversation.id, message),
                self.config.teams_timeout_seconds + 5)
        except Exception as exc:
            self._drop(reference.service_url)  # a rejected token or a broken client: rebuild it
            error = classify(exc)
            self._on_status(error.failure.status)
            if error.failure.retry_after:
                self._not_before = max(self._not_before, time.monotonic() + min(
                    error.failure.retry_after, self.config.teams_max_retry_after_seconds))
            raise error from exc
        self._on_status(201)
        return getattr(response, "id", None)


def classify(exc: BaseException) -> failures.FailureError:
    """SDK exception → classified failure (see teams-delivery-facts §4)."""
    if isinstance(exc, failures.FailureError):
        return exc
    if isinstance(exc, HttpOperationError) and exc.response is not None:
        response = exc.response
        # a `requests` response, or the aiohttp one (`status`) the aiohttp transport hands to msrest's error
        status = int(getattr(response, "status_code", None) or response.status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        code = ""
        error = getattr(getattr(exc, "error", None), "error", None)
        if error is not None and getattr(error, "code", None):
            code = f"{error.code}: {getattr(error, 'message', '') or ''}".strip()
        return failures.FailureError(classify_status(status, code or str(exc)[:200], retry_after))
    if isinstance(exc, DeserializationError):
        return failures.transient("TeamsBadGateway", f"non-JSON error body from the connector: {str(exc)[:200]}")
    if isinstance(exc, TimeoutError):
        return failures.transient("TeamsTimeout", "no answer from the connector in time")
    if isinstance(exc, ClientRequestError):
        text = str(exc)
        if "timed out" in text.lower() or "timeout" in text.lower():
            return failures.transient("TeamsTimeout", f"no answer from the connector in time: {text[:200]}")
        return failures.transient("TeamsUnreachable", text[:300])
    if isinstance(exc, aiohttp.ClientError):
        return failures.transient("TeamsUnreachable", f"{type(exc).__name__}: {str(exc)[:200]}")
    if isinstance(exc, PermissionError):
        return failures.systemic("TeamsCredentialsRejected", str(exc)[:300])
    if isinstance(exc, requests.RequestException | OSError):
        return failures.transient("TeamsTokenEndpointUnreachable", f"{type(exc).__name__}: {str(exc)[:200]}")
    if type(exc) is Exception:  # the SDK raises plain Exception for settings it cannot use ("Invalid app_id", ...)
        return failures.systemic("TeamsConfiguration", str(exc)[:300])
    return failures.transient("TeamsUnexpected", f"{type(exc).__name__}: {str(exc)[:300]}")
