"""A local "Teams" for the cluster: a Bot Connector that records the delivered cards (with a web page and a JSON
API) and a Microsoft-Entra-like HTTPS token endpoint (OIDC discovery + client credentials) for the worker's MSAL path.

The worker reaches it with `DIGEST_TEAMS_LOGIN_URL=https://<host>:<token port>/adfs` (tenant `adfs`: MSAL then skips
instance discovery at login.microsoftonline.com and reads `/adfs/.well-known/openid-configuration`),
`DIGEST_TEAMS_OAUTH_SCOPE=https://api.botframework.com`, the certificate trusted via `REQUESTS_CA_BUNDLE`, and
conversation references whose service URL is `http://<host>:<connector port>/`. Tokens are opaque strings; the
connector accepts only tokens this endpoint issued (and not yet expired), as the real one accepts only Entra's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import hmac
import html
import ipaddress
import itertools
import json
import os
import re
import secrets
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
LOGIN_TENANT = "adfs"
OAUTH_SCOPE = "https://api.botframework.com"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MORE = re.compile(r"…and (\d+) more")
_LINK = re.compile(r"\[(.*)\]\((\S+)\)", re.DOTALL)
Record = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _texts(elements: Any) -> Iterable[dict[str, Any]]:
    return (e for e in elements if isinstance(e, dict)) if isinstance(elements, list) else ()


def adaptive_card(activity: Any) -> dict[str, Any] | None:
    """The first Adaptive Card attached to `activity`, if any."""
    if not isinstance(activity, dict):
        return None
    for attachment in _texts(activity.get("attachments")):
        if attachment.get("contentType") == ADAPTIVE_CARD and isinstance(attachment.get("content"), dict):
            return dict(attachment["content"])
    return None


def card_summary(activity: Any) -> dict[str, Any] | None:
    """Title, item count (shown + "…and N more") and shown items of a digest card (see digest_worker.card)."""
    card = adaptive_card(activity)
    if card is None:
        return None
    body = list(_texts(card.get("body")))
    title = next((str(b.get("text", "")) for b in body if b.get("type") == "TextBlock"), "")
    items, hidden = [], 0
    for element in body:
        if element.get("type") == "Container":
            blocks = [str(b.get("text", "")) for b in _texts(element.get("items")) if b.get("type") == "TextBlock"]
            items.append({"heading": blocks[0] if blocks else "", "text": blocks[1] if len(blocks) > 1 else ""})
        elif element.get("type") == "TextBlock" and (more := _MORE.fullmatch(str(element.get("text", "")))):
            hidden += int(more.group(1))
    return {"title": title, "items": len(items) + hidden, "shown": items}


def request_id(activity: Any) -> str | None:
    """The digest request id, if the activity carries one in `channelData.requestId`.

    The worker (digest_worker.teams) sends none today: its activities carry only the card, the summary (= the card
    title) and `channelData.tenant`; a load test that needs to tell requests apart can put the id in the title."""
    channel_data = activity.get("channelData") if isinstance(activity, dict) else None
    value = channel_data.get("requestId") if isinstance(channel_data, dict) else None
    return str(value) if value is not None else None


def _aad_error(status: int, error: str, code: int, message: str, request: web.Request) -> web.Response:
    """An error answer shaped like Microsoft Entra's (`AADSTS<code>: ...`)."""
    trace, correlation = str(uuid.uuid4()), request.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response({
        "error": error,
        "error_description": f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} "
                             f"Timestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }, status=status)


class LocalTeams:
    """The shared state of the connector and the token endpoint: issued tokens, recorded posts, counters.

    Keeps the last `keep` posts in memory (the page and `/api/activities`); `record` gets every delivered one."""

    def __init__(self, app_id: str, password: str, *, auth: bool = True, record: Path | None = None,
                 keep: int = 2000, token_lifetime: int = 3600, latency: float = 0.0) -> None:
        self.app_id = app_id
        self.latency = latency
        """Seconds each accepted post takes (Teams answers a proactive post in about a second, not at once)."""
        self._password = password
        self.auth = auth
        self.token_lifetime = token_lifetime
        self.posts: collections.deque[Record] = collections.deque(maxlen=keep)
        self._tokens: dict[str, float] = {}  # token → expiry (time.time())
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._record: IO[str] | None = record.open("a", encoding="utf-8", buffering=1) if record else None
        self._counts: collections.Counter[str] = collections.Counter()
        self._delivered: collections.Counter[str] = collections.Counter()
        self._titles: set[tuple[str, str]] = set()
        self._request_ids: set[str] = set()
        self._token_errors: collections.Counter[str] = collections.Counter()

    def close(self) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None

    # --- token endpoint -------------------------------------------------------------------------------------------

    def token_app(self) -> web.Application:
        """OIDC discovery (ADFS-style and v2.0 paths) and the client-credentials token endpoint."""
        app = web.Application()
        app.router.add_get("/{tenant}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self._keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/{tenant}/oauth2/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        base, tenant = f"https://{request.host}", request.match_info["tenant"]
        issuer = f"{base}/{tenant}" if tenant == LOGIN_TENANT else f"{base}/{tenant}/v2.0"
        return web.json_response({
            "issuer": issuer,
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["code", "id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        })

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": []})  # tokens are opaque; nothing verifies a signature

    def _token_error(self, status: int, error: str, code: int, message: str, request: web.Request) -> web.Response:
        self._token_errors[f"AADSTS{code}"] += 1
        return _aad_error(status, error, code, message, request)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._counts["token_requests"] += 1
        field = {k: str(v) for k, v in form.items()}
        client_id, secret, scope = field.get("client_id"), field.get("client_secret"), field.get("scope")
        if field.get("grant_type") != "client_credentials":
            return self._token_error(400, "unsupported_grant_type", 70003,
                                     "The app requested an unsupported grant type.", request)
        if not client_id:
            return self._token_error(400, "invalid_request", 900144,
                                     "The request body must contain the following parameter: 'client_id'.", request)
        if client_id != self.app_id:
            return self._token_error(400, "unauthorized_client", 700016,
                                     f"Application with identifier '{client_id}' was not found in the directory "
                                     f"'{request.match_info['tenant']}'.", request)
        if not secret:
            return self._token_error(401, "invalid_client", 7000218,
                                     "The request body must contain the following parameter: 'client_assertion' "
                                     "or 'client_secret'.", request)
        if not hmac.compare_digest(secret.encode(), self._password.encode()):
            return self._token_error(401, "invalid_client", 7000215,
                                     f"Invalid client secret provided. Ensure the secret being sent in the request "
                                     f"is the client secret value, not the client secret ID, for a secret added to "
                                     f"app '{client_id}'.", request)
        if not scope or not all(s.endswith("/.default") for s in scope.split()):
            return self._token_error(400, "invalid_scope", 1002012,
                                     f"The provided value for scope {scope or ''} is not valid. Client credential "
                                     f"flows must have a scope value with /.default suffixed to the resource "
                                     f"identifier (application ID URI).", request)
        now = time.time()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = f"local-teams.{secrets.token_urlsafe(24)}"
        self._tokens[token] = now + self.token_lifetime
        self._counts["tokens_issued"] += 1
        return web.json_response({"token_type": "Bearer", "expires_in": self.token_lifetime,
                                  "ext_expires_in": self.token_lifetime, "access_token": token})

    def token_state(self, authorization: str | None) -> str | None:
        """`None` (no header), `issued`, `expired` or `unknown`."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None:
            return "unknown"
        return "issued" if expiry > time.time() else "expired"

    # --- Bot Connector --------------------------------------------------------------------------------------------

    def connector_app(self) -> web.Application:
        """The Bot Connector's activity POSTs, the page and the JSON API."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v3/conversations/{conv}/activities", self._activity)
        app.router.add_post("/v3/conversations/{conv}/activities/{reply_to}", self._activity)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/activities", self._api_activities)
        app.router.add_get("/api/stats", self._api_stats)
        app.router.add_put("/api/latency", self._api_latency)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _activity(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        token = self.token_state(header)
        record: Record = {
            "seq": next(self._seq), "time": _now(), "conversation_id": request.match_info["conv"],
            "reply_to": request.match_info.get("reply_to"), "authorization": header is not None, "token": token,
            "status": 201, "activity_id": None, "activity": None, "card": None,
        }
        self._counts["posts"] += 1
        answer: web.Response
        if self.auth and token != "issued":
            record["status"] = 401
            answer = web.json_response({"message": "Authorization has been denied for this request."}, status=401)
        else:
            try:
                activity = await request.json()
            except ValueError:
                activity = None
            if not isinstance(activity, dict):
                record["status"] = 400
                answer = web.json_response({"error": {"code": "BadArgument", "message": "Invalid activity"}},
                                           status=400)
            else:
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                record["activity"], record["card"] = activity, card_summary(activity)
                record["activity_id"] = f"activity-{next(self._ids)}"
                answer = web.json_response({"id": record["activity_id"]}, status=201)
        self._remember(record)
        return answer

    def _remember(self, record: Record) -> None:
        self.posts.append(record)
        if record["status"] != 201:
            self._counts["rejected"] += 1
            return
        conversation = record["conversation_id"]
        self._counts["delivered"] += 1
        self._counts["replies"] += record["reply_to"] is not None
        self._delivered[conversation] += 1
        self._titles.add((conversation, (record["card"] or {}).get("title", "")))
        if (rid := request_id(record["activity"])) is not None:
            self._request_ids.add(rid)
        if self._record is not None:
            self._record.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

    def stats(self) -> dict[str, Any]:
        """Counters since the start (not limited to the posts kept in memory)."""
        delivered = self._counts["delivered"]
        return {
            "posts": self._counts["posts"], "delivered": delivered, "rejected": self._counts["rejected"],
            "replies": self._counts["replies"],
            "delivered_per_conversation": dict(self._delivered),
            "distinct_titles": len(self._titles), "repeated_titles": delivered - len(self._titles),
            "request_ids": len(self._request_ids),
            "token_requests": self._counts["token_requests"], "tokens_issued": self._counts["tokens_issued"],
            "token_errors": dict(self._token_errors),
        }

    def activities(self, conversation: str | None = None, since: int = 0) -> list[Record]:
        return [r for r in self.posts if r["seq"] > since and (conversation is None or
                                                                 r["conversation_id"] == conversation)]

    async def _api_activities(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="since: an integer") from None
        return web.json_response(self.activities(request.query.get("conversation"), since))

    async def _api_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _api_latency(self, request: web.Request) -> web.Response:
        """`PUT /api/latency` with `{"seconds": S}`: how long each accepted post takes from now on."""
        try:
            seconds = float((await request.json())["seconds"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='body: {"seconds": <number>}') from None
        if not 0 <= seconds <= 60:
            raise web.HTTPBadRequest(text="seconds: 0..60")
        self.latency = seconds
        return web.json_response({"seconds": seconds})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _page(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, int(request.query.get("limit", "50")))
        except ValueError:
            limit = 50
        delivered = [r for r in reversed(self.posts) if r["status"] == 201][:limit]
        return web.Response(text=page(delivered, self.stats()), content_type="text/html")


# --- the page -------------------------------------------------------------------------------------------------------

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;color:#222}
h1{font-size:1.4em}article{border:1px solid #ccd;border-left:4px solid #6264a7;border-radius:4px;margin:.8em 0;
padding:.6em .9em}h2{font-size:1.1em;margin:.1em 0}.meta,.sub{color:#667;font-size:.9em}ul{margin:.4em 0;
padding-left:1.3em}pre{background:#f5f5f8;overflow:auto;padding:.5em;font-size:.85em}.warn{color:#a33}"""
_REFRESH = 'setInterval(function(){if(!document.querySelector("details[open]"))location.reload()},5000)'


def _heading(text: str) -> str:
    """An item heading (`[title](url)` with escaped brackets, or plain text) as safe HTML."""
    link = _LINK.fullmatch(text)
    if link is None:
        return html.escape(text.replace("\\[", "[").replace("\\]", "]"))
    title, url = html.escape(link.group(1).replace("\\[", "[").replace("\\]", "]")), link.group(2)
    if url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url, quote=True)}" rel="noreferrer">{title}</a>'
    return title


def _article(record: Record) -> str:
    card = record.get("card") or {}
    esc = html.escape
    count = card.get("items", 0)
    reply = (f' · <span class="warn">posted as a reply to {esc(str(record["reply_to"]))}</span>'
             if record.get("reply_to") else "")
    items = "".join(f"<li>{_heading(str(i['heading']))}<div class=sub>{esc(str(i['text']))}</div></li>"
                    for i in card.get("shown", []))
    raw = esc(json.dumps(record.get("activity"), ensure_ascii=False, indent=2))
    return (f"<article><h2>{esc(str(card.get('title') or '(no Adaptive Card)'))}</h2>"
            f"<div class=meta>{esc(str(record['conversation_id']))} · {esc(str(record['time']))} · "
            f"{count} item{'s' if count != 1 else ''} · {esc(str(record['activity_id']))}{reply}</div>"
            f"{f'<ul>{items}</ul>' if items else ''}"
            f"<details><summary>activity JSON</summary><pre>{raw}</pre></details></article>")


def page(delivered: Sequence[Record], stats: dict[str, Any]) -> str:
    """The HTML page: delivered cards (newest first, as given), counters; reloads every 5 s unless JSON is open."""
    conversations = ", ".join(f"{html.escape(c)}: {n}" for c, n in sorted(stats["delivered_per_conversation"].items()))
    articles = "".join(_article(r) for r in delivered) or "<p>Nothing delivered yet.</p>"
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>Local Teams · {stats['delivered']} delivered</title><style>{_STYLE}</style>"
            f"<noscript><meta http-equiv=refresh content=5></noscript><script>{_REFRESH}</script></head><body>"
            f"<h1>Local Teams</h1><p class=meta>{stats['delivered']} delivered · {stats['rejected']} rejected · "
            f"{stats['tokens_issued']} tokens issued{' · ' + conversations if conversations else ''}</p>"
            f"{articles}</body></html>")


# --- certificates, serving, CLI -------------------------------------------------------------------------------------


def write_certificate(cert: Path, key: Path, hosts: Sequence[str], days: int = 30) -> None:
    """A self-signed certificate (its own CA, so it can be the trusted bundle) for these IPs / DNS names."""
    private = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digest-cluster local Teams")])
    now = dt.datetime.now(dt.UTC)
    public = private.public_key()
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)


async def _start(app: web.Application, host: str, port: int, context: ssl.SSLContext | None) -> tuple[
        web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner, int(runner.addresses[0][1])


async def serve_async(host: str, connector_port: int, token_port: int, cert: Path, key: Path, app_id: str,
                      password: str, record: Path | None, *, auth: bool = True, advertise: str | None = None,
                      keep: int = 2000, ready: Callable[[dict[str, Any]], None] | None = None,
                      stop: asyncio.Event | None = None) -> None:
    """Serve both until `stop` is set (default: SIGTERM or SIGINT); `ready` gets the URLs once both listen."""
    teams = LocalTeams(app_id, password, auth=auth, record=record, keep=keep)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    runners: list[web.AppRunner] = []
    try:
        connector, connector_port = await _start(teams.connector_app(), host, connector_port, None)
        runners.append(connector)
        tokens, token_port = await _start(teams.token_app(), host, token_port, context)
        runners.append(tokens)
        name = advertise or host
        name = f"[{name}]" if ":" in name else name
        connector_url, token_base = f"http://{name}:{connector_port}/", f"https://{name}:{token_port}"
        if ready is not None:
            ready({"service_url": connector_url, "page": connector_url,
                   "activities": f"{connector_url}api/activities", "stats": f"{connector_url}api/stats",
                   "login_url": f"{token_base}/{LOGIN_TENANT}", "oauth_scope": OAUTH_SCOPE,
                   "token_url": f"{token_base}/{LOGIN_TENANT}/oauth2/v2.0/token", "cert": str(cert),
                   "auth": auth, "record": str(record) if record else None})
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        teams.close()


def serve(host: str, connector_port: int, token_port: int, cert: Path, key: Path, app_id: str, password: str,
          record: Path | None, *, auth: bool = True, advertise: str | None = None, keep: int = 2000,
          ready: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run the connector (HTTP) and the token endpoint (HTTPS) until SIGTERM or SIGINT (port 0: any free port)."""
    asyncio.run(serve_async(host, connector_port, token_port, cert, key, app_id, password, record, auth=auth,
                            advertise=advertise, keep=keep, ready=ready))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m digest_cluster.teams ...`: prints one JSON line with the URLs when ready, runs until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m digest_cluster.teams",
                                     description="A local Bot Connector and token endpoint.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--advertise", help="host to put in the printed URLs (default: --host)")
    parser.add_argument("--connector-port", type=int, default=0, help="Bot Connector + page (HTTP); 0: any")
    parser.add_argument("--token-port", type=int, default=0, help="token endpoint (HTTPS); 0: any")
    parser.add_argument("--cert", type=Path, required=True, help="PEM certificate of the token endpoint")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key of the token endpoint")
    parser.add_argument("--app-id", required=True, help="the bot's app (client) id")
    parser.add_argument("--password-file", type=Path, required=True, help="file holding the bot's client secret")
    parser.add_argument("--record", type=Path, help="append every delivered activity to this file (JSON lines)")
    parser.add_argument("--keep", type=int, default=2000, help="posts kept in memory for the page and the API")
    parser.add_argument("--no-auth", action="store_true", help="accept posts without a token issued here")
    args = parser.parse_args(argv)
    try:
        password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        parser.error(f"--password-file: {exc.strerror}")
    if not password:
        parser.error("--password-file: empty")

    def ready(info: dict[str, Any]) -> None:
        print(json.dumps(info), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.connector_port, args.token_port, args.cert, args.key, args.app_id, password,
              args.record, auth=not args.no_auth, advertise=args.advertise, keep=args.keep, ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
