"""Worker configuration from the environment (names in `contract`), validated at once: every problem is listed.
Secrets come from their plain variable or from the file `<NAME>_FILE` names (`contract.secret`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from digest_api import contract

APP_TYPES = ("MultiTenant", "SingleTenant", "UserAssignedMSI")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:////tmp/digest-worker.db"
SECRET_NAMES = frozenset(contract.SECRET_VARIABLES)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,30}$")

T = TypeVar("T")


class ConfigError(Exception):
    """Every configuration problem at once; values of secret variables are never echoed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid worker configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class WorkerConfig:
    pipeline: str
    pod_name: str
    queue: str
    namespace: str | None
    connection_string: str | None
    max_delivery_count: int
    concurrency: int
    prefetch: int
    max_lock_renewal_seconds: int
    drain_seconds: float
    metrics_port: int
    teams_app_id: str
    teams_app_type: str
    teams_tenant_id: str | None
    teams_app_password: str | None
    teams_timeout_seconds: float
    teams_max_retry_after_seconds: float
    teams_login_url: str | None
    teams_oauth_scope: str | None
    teams_service_urls: tuple[contract.ServiceUrlRule, ...]
    database_url: str
    database_migrate: bool
    source: str | None
    post_empty_digest: bool
    card_max_bytes: int
    systemic_backoff_seconds: float
    reconnect_backoff_seconds: float
    log_level: str

    def __repr__(self) -> str:  # never print secrets
        return f"WorkerConfig(pipeline={self.pipeline!r}, queue={self.queue!r}, namespace={self.namespace!r})"


def async_database_url(url: str) -> str:
    """`postgresql://` → `postgresql+asyncpg://`, `sqlite://` → `sqlite+aiosqlite://` (the async drivers)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL (expected scheme://...)")
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    shown = f" {scheme!r}" if SCHEME.match(scheme) else ""  # never echo what may be part of a secret
    raise ValueError(f"unsupported database scheme{shown} (use postgresql:// or sqlite://)")


def load(environ: Mapping[str, str], read: Callable[[str], bytes] = contract.read_bytes) -> WorkerConfig:
    """The configuration from `environ`; `read` reads the files `*_FILE` variables name."""
    env, problems = contract.resolve_secrets(environ, read)

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name, "").strip()
        return value if value else default

    def num(name: str, default: T, conv: Callable[[str], T], lo: float, hi: float) -> T:
        raw = get(name)
        if raw is None:
            return default
        shown = "(secret)" if name in SECRET_NAMES else repr(raw)
        try:
            value = conv(raw)
        except ValueError:
            problems.append(f"{name}={shown}: not a number")
            return default
        if not lo <= value <= hi:  # type: ignore[operator]
            problems.append(f"{name}={shown}: must be between {lo:g} and {hi:g}")
        return value

    def flag(name: str, default: bool) -> bool:
        raw = get(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        problems.append(f"{name}={raw!r}: expected true or false")
        return default

    queue = get(contract.SERVICEBUS_QUEUE)
    if queue is None:
        problems.append(f"{contract.SERVICEBUS_QUEUE}: required")
    namespace = get(contract.SERVICEBUS_NAMESPACE)
    connection_string = get(contract.SERVICEBUS_CONNECTION_STRING)
    if namespace is None and connection_string is None:
        problems.append(f"{contract.SERVICEBUS_NAMESPACE} or {contract.SERVICEBUS_CONNECTION_STRING}: one is required")
    if connection_string is not None and "endpoint=" not in connection_string.lower():
        problems.append(f"{contract.SERVICEBUS_CONNECTION_STRING}: (secret) has no Endpoint=")
    if namespace is not None and ("/" in namespace or " " in namespace):
        problems.append(f"{contract.SERVICEBUS_NAMESPACE}={namespace!r}: expected a host name like "
                        "'<name>.servicebus.windows.net'")

    app_id = get(contract.TEAMS_APP_ID, "") or ""
    app_type = get(contract.TEAMS_APP_TYPE, "MultiTenant") or "MultiTenant"
    tenant_id = get(contract.TEAMS_TENANT_ID)
    password = get(contract.TEAMS_APP_PASSWORD)
    if app_type not in APP_TYPES:
        problems.append(f"{contract.TEAMS_APP_TYPE}={app_type!r}: one of {', '.join(APP_TYPES)}")
    elif app_type == "MultiTenant":
        if bool(app_id) != bool(password):
            problems.append(f"{contract.TEAMS_APP_ID} and {contract.TEAMS_APP_PASSWORD}: set both "
                            "(or neither, which disables Bot Framework authentication)")
    else:
        if not app_id:
            problems.append(f"{contract.TEAMS_APP_ID}: required for {app_type}")
        if tenant_id is None:
            problems.append(f"{contract.TEAMS_TENANT_ID}: required for {app_type}")
        if app_type == "SingleTenant" and password is None:
            problems.append(f"{contract.TEAMS_APP_PASSWORD}: required for SingleTenant")
    login_url = get(contract.TEAMS_LOGIN_URL)
    if login_url is not None and not login_url.startswith("https://"):
        problems.append(f"{contract.TEAMS_LOGIN_URL}={login_url!r}: must be an https:// URL")

    try:
        service_urls = contract.parse_service_urls(get(contract.TEAMS_SERVICE_URLS))
    except ValueError as exc:
        problems.append(f"{contract.TEAMS_SERVICE_URLS}: {exc}")
        service_urls = ()

    database_url = get(contract.DATABASE_URL, DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL
    try:
        database_url = async_database_url(database_url)
    except ValueError as exc:
        problems.append(f"{contract.DATABASE_URL}: (secret) {exc}")
    source = get(contract.SOURCE)
    if source is not None and ":" not in source:
        problems.append(f"{contract.SOURCE}={source!r}: expected 'package.module:factory'")
    log_level = (get(contract.LOG_LEVEL, "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"{contract.LOG_LEVEL}={log_level!r}: one of DEBUG, INFO, WARNING, ERROR")

    config = WorkerConfig(
        pipeline=get(contract.PIPELINE, "digest") or "digest",
        pod_name=get(contract.POD_NAME, "local") or "local",
        queue=queue or "",
        namespace=namespace,
        connection_string=connection_string,
        max_delivery_count=num(contract.MAX_DELIVERY_COUNT, 10, int, 1, 2000),
        concurrency=num(contract.CONCURRENCY, 4, int, 1, 256),
        prefetch=num(contract.PREFETCH, 0, int, 0, 1000),
        max_lock_renewal_seconds=num(contract.MAX_LOCK_RENEWAL_SECONDS, 300, int, 0, 86400),
        drain_seconds=num(contract.DRAIN_SECONDS, 25.0, float, 0, 3600),
        metrics_port=num(contract.METRICS_PORT, 8080, int, 0, 65535),
        teams_app_id=app_id,
        teams_app_type=app_type,
        teams_tenant_id=tenant_id,
        teams_app_password=password,
        teams_timeout_seconds=num(contract.TEAMS_TIMEOUT_SECONDS, 15.0, float, 0.1, 300),
        teams_max_retry_after_seconds=num(contract.TEAMS_MAX_RETRY_AFTER_SECONDS, 60.0, float, 0, 3600),
        teams_login_url=login_url,
        teams_oauth_scope=get(contract.TEAMS_OAUTH_SCOPE),
        teams_service_urls=service_urls,
        database_url=database_url,
        database_migrate=flag(contract.DATABASE_MIGRATE, True),
        source=source,
        post_empty_digest=flag(contract.POST_EMPTY_DIGEST, True),
        card_max_bytes=num(contract.CARD_MAX_BYTES, 28 * 1024, int, 1024, 1024 * 1024),
        systemic_backoff_seconds=num(contract.SYSTEMIC_BACKOFF_SECONDS, 5.0, float, 0.01, 3600),
        reconnect_backoff_seconds=num(contract.RECONNECT_BACKOFF_SECONDS, 1.0, float, 0.01, 600),
        log_level=log_level,
    )
    if problems:
        raise ConfigError(problems)
    return config
