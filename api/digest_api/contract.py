"""The worker's environment contract: the variables the operator renders and the worker reads, how a secret
variable is read (plain or from a file) and the Teams service URL allow-list.

Kept free of dependencies (standard library only, pure functions) so the operator, the worker and the DLQ monitor
share it without the worker's runtime libraries.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

PIPELINE: Final = "DIGEST_PIPELINE"
POD_NAME: Final = "DIGEST_POD_NAME"
SERVICEBUS_NAMESPACE: Final = "DIGEST_SERVICEBUS_NAMESPACE"
SERVICEBUS_CONNECTION_STRING: Final = "DIGEST_SERVICEBUS_CONNECTION_STRING"
SERVICEBUS_QUEUE: Final = "DIGEST_SERVICEBUS_QUEUE"
MAX_DELIVERY_COUNT: Final = "DIGEST_MAX_DELIVERY_COUNT"
CONCURRENCY: Final = "DIGEST_CONCURRENCY"
PREFETCH: Final = "DIGEST_PREFETCH"
MAX_LOCK_RENEWAL_SECONDS: Final = "DIGEST_MAX_LOCK_RENEWAL_SECONDS"
DRAIN_SECONDS: Final = "DIGEST_DRAIN_SECONDS"
METRICS_PORT: Final = "DIGEST_METRICS_PORT"
TEAMS_APP_ID: Final = "DIGEST_TEAMS_APP_ID"
TEAMS_APP_TYPE: Final = "DIGEST_TEAMS_APP_TYPE"
TEAMS_TENANT_ID: Final = "DIGEST_TEAMS_TENANT_ID"
TEAMS_APP_PASSWORD: Final = "DIGEST_TEAMS_APP_PASSWORD"
DATABASE_URL: Final = "DIGEST_DATABASE_URL"
REQUEUE_POLICY_FILE: Final = "DIGEST_REQUEUE_POLICY_FILE"

# Seconds between the drain deadline the worker uses and the pod's terminationGracePeriodSeconds.
DRAIN_MARGIN_SECONDS: Final = 5

# Optional worker settings (defaults apply when unset); the operator does not render these, `worker.env` can.
SOURCE: Final = "DIGEST_SOURCE"
POST_EMPTY_DIGEST: Final = "DIGEST_POST_EMPTY_DIGEST"
CARD_MAX_BYTES: Final = "DIGEST_CARD_MAX_BYTES"
TEAMS_TIMEOUT_SECONDS: Final = "DIGEST_TEAMS_TIMEOUT_SECONDS"
TEAMS_MAX_RETRY_AFTER_SECONDS: Final = "DIGEST_TEAMS_MAX_RETRY_AFTER_SECONDS"
TEAMS_LOGIN_URL: Final = "DIGEST_TEAMS_LOGIN_URL"
TEAMS_OAUTH_SCOPE: Final = "DIGEST_TEAMS_OAUTH_SCOPE"
DATABASE_MIGRATE: Final = "DIGEST_DATABASE_MIGRATE"
SYSTEMIC_BACKOFF_SECONDS: Final = "DIGEST_SYSTEMIC_BACKOFF_SECONDS"
RECONNECT_BACKOFF_SECONDS: Final = "DIGEST_RECONNECT_BACKOFF_SECONDS"
LOG_LEVEL: Final = "DIGEST_LOG_LEVEL"
TEAMS_SERVICE_URLS: Final = "DIGEST_TEAMS_SERVICE_URLS"

# ---- secrets: a plain variable (local runs) or `<NAME>_FILE` naming a file that holds the value (Kubernetes) ----

FILE_SUFFIX: Final = "_FILE"
SECRET_VARIABLES: Final = (SERVICEBUS_CONNECTION_STRING, TEAMS_APP_PASSWORD, DATABASE_URL)
SERVICEBUS_CONNECTION_STRING_FILE: Final = SERVICEBUS_CONNECTION_STRING + FILE_SUFFIX
TEAMS_APP_PASSWORD_FILE: Final = TEAMS_APP_PASSWORD + FILE_SUFFIX
DATABASE_URL_FILE: Final = DATABASE_URL + FILE_SUFFIX
MAX_SECRET_BYTES: Final = 64 * 1024


class SecretError(ValueError):
    """A secret variable that cannot be resolved; the message names variables and paths, never a value."""


def read_bytes(path: str) -> bytes:
    """The default file reader of `secret` (at most MAX_SECRET_BYTES + 1 bytes)."""
    with open(path, "rb") as handle:
        return handle.read(MAX_SECRET_BYTES + 1)


def secret(environ: Mapping[str, str], name: str, read: Callable[[str], bytes] = read_bytes) -> str | None:
    """The value of secret variable `name`: `environ[name]`, or the content of the file `environ[name + "_FILE"]`
    names (UTF-8, one trailing newline stripped). None when neither is set (empty counts as unset). Raises
    `SecretError` when both are set, or the file cannot be read, is empty, too large or not UTF-8 text."""
    file_name = name + FILE_SUFFIX
    plain = environ.get(name, "")
    path = environ.get(file_name, "")
    if plain and path:
        raise SecretError(f"{name} and {file_name} are both set: set one of them")
    if not path:
        return plain or None
    try:
        data = read(path)
    except OSError as exc:
        raise SecretError(f"{file_name}={path!r}: cannot read the file: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{file_name}={path!r}: the file is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{file_name}={path!r}: the file is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise SecretError(f"{file_name}={path!r}: the file is empty")
    return text


def resolve_secrets(environ: Mapping[str, str], read: Callable[[str], bytes] = read_bytes,
                    names: Iterable[str] = SECRET_VARIABLES) -> tuple[dict[str, str], list[str]]:
    """`environ` with each secret in `names` under its plain name (read from its file when `<NAME>_FILE` is set)
    and the `_FILE` variables removed, plus the problems found (every one, each naming its variables)."""
    resolved = dict(environ)
    problems: list[str] = []
    for name in names:
        try:
            value = secret(environ, name, read)
        except SecretError as exc:
            problems.append(str(exc))
            value = None
        resolved.pop(name + FILE_SUFFIX, None)
        resolved.pop(name, None)
        if value is not None:
            resolved[name] = value
    return resolved, problems


# ---- Teams service URLs the bot's token may be sent to ---------------------------------------------------------

# The Bot Connector hosts Teams names as `serviceUrl` (each an exact host: anyone can register a name under
# trafficmanager.net), and the Bot Framework's own channel services under botframework.com. Sources in docs/worker.md.
DEFAULT_TEAMS_SERVICE_URLS: Final = (
    "https://smba.trafficmanager.net",  # Teams, public cloud
    "https://smba.infra.gcc.teams.microsoft.com",  # Teams GCC
    "https://smba.infra.gov.teams.microsoft.us",  # Teams GCC High
    "https://smba.infra.dod.teams.microsoft.us",  # Teams DoD
    "https://*.botframework.com",  # Bot Framework channel services (Direct Line, Web Chat, ...)
)
DEFAULT_ENTRY: Final = "default"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ServiceUrlRule:
    """One allowed service URL prefix: scheme, host (or `*.` + domain: any host below it), port, path prefix."""

    scheme: str
    host: str
    wildcard: bool
    port: int
    path: str  # "" (any path) or "/segment..." without a trailing slash

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.wildcard:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")

    def __str__(self) -> str:
        origin = _origin(self.scheme, self.host, self.port)
        return origin.replace("://", "://*.", 1) + self.path if self.wildcard else origin + self.path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host(raw: str) -> str | None:
    """A lower-case DNS name or IP address, or None."""
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    host = raw.lower()
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return None
    return host


def parse_service_url_rule(entry: str) -> ServiceUrlRule:
    """`scheme://host[:port][/path]` (scheme http or https; host a DNS name, `*.domain`, an IP address or `[IPv6]`;
    no user, query or fragment). Raises ValueError saying what is wrong."""
    parts = urlsplit(entry)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not entry.lower().startswith(f"{scheme}://"):
        raise ValueError("expected scheme://host[:port][/path] with scheme https or http")
    if "@" in parts.netloc or parts.query or parts.fragment or entry.endswith(("?", "#")):
        raise ValueError("no user, query or fragment allowed")
    netloc = parts.netloc
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port") from None
    raw_host = netloc.rsplit(":", 1)[0] if port is not None or netloc.endswith(":") else netloc
    wildcard = raw_host.startswith("*.")
    host = _host(raw_host[2:] if wildcard else raw_host)
    if host is None or (wildcard and (_is_ip(host) or "." not in host)):
        raise ValueError("invalid host (a DNS name, *.domain with at least two labels, or an IP address)")
    path = parts.path.rstrip("/")
    if "//" in parts.path or any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("invalid path")
    return ServiceUrlRule(scheme, host, wildcard, port if port is not None else _DEFAULT_PORTS[scheme], path)


def parse_service_urls(value: str | None) -> tuple[ServiceUrlRule, ...]:
    """The allow-list DIGEST_TEAMS_SERVICE_URLS holds: comma-separated entries (`parse_service_url_rule`), `default`
    standing for DEFAULT_TEAMS_SERVICE_URLS; unset or empty: the defaults. Raises ValueError naming the entry."""
    entries = [e.strip() for e in (value or "").split(",") if e.strip()] or [DEFAULT_ENTRY]
    rules: list[ServiceUrlRule] = []
    for entry in entries:
        if entry.lower() == DEFAULT_ENTRY:
            rules.extend(parse_service_url_rule(e) for e in DEFAULT_TEAMS_SERVICE_URLS)
            continue
        try:
            rules.append(parse_service_url_rule(entry))
        except ValueError as exc:
            raise ValueError(f"entry {entry!r}: {exc}") from None
    return tuple(dict.fromkeys(rules))


@dataclass(frozen=True)
class ServiceUrlVerdict:
    allowed: bool
    origin: str  # scheme://host[:port] of the URL (what an operator needs to see), or the clipped raw value
    host: str


def _origin(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == _DEFAULT_PORTS.get(scheme) else f":{port}")


def check_service_url(url: str, rules: Iterable[ServiceUrlRule]) -> ServiceUrlVerdict:
    """Whether the bot may send its token to `url` (a conversation reference's serviceUrl): its scheme, host, port
    and path fall under one of `rules`. Refused as well: anything unparsable, a user part, whitespace or control
    characters (parsers disagree about those), a host that is not a plain DNS name or IP address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ServiceUrlVerdict(False, _clip(url), "")
    scheme = parts.scheme.lower()
    raw_host = parts.hostname or ""
    host = _host(raw_host) if raw_host else None
    if scheme not in _DEFAULT_PORTS or host is None:
        return ServiceUrlVerdict(False, f"{scheme}://{_clip(raw_host, 100)}" if raw_host else _clip(url), raw_host)
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    origin = _origin(scheme, host, port)
    unsafe = "@" in parts.netloc or any(c.isspace() or not c.isprintable() for c in url) or not url.lower().startswith(
        f"{scheme}://")
    path = parts.path or "/"
    allowed = not unsafe and "/../" not in path + "/" and any(rule.matches(scheme, host, port, path) for rule in rules)
    return ServiceUrlVerdict(allowed, origin, host)


def _clip(text: str, width: int = 200) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= width else text[: width - 1] + "…"
