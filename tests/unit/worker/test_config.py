"""Worker configuration from the environment."""

from __future__ import annotations

import pytest

from digest_api import contract
from digest_worker.config import DEFAULT_DATABASE_URL, ConfigError, async_database_url, load

BASE = {contract.SERVICEBUS_QUEUE: "digests", contract.SERVICEBUS_NAMESPACE: "ns.servicebus.windows.net"}


def test_defaults() -> None:
    cfg = load(BASE)
    assert (cfg.queue, cfg.namespace, cfg.connection_string) == ("digests", "ns.servicebus.windows.net", None)
    assert (cfg.max_delivery_count, cfg.concurrency, cfg.prefetch, cfg.metrics_port) == (10, 4, 0, 8080)
    assert cfg.database_url == DEFAULT_DATABASE_URL
    assert cfg.teams_app_type == "MultiTenant" and cfg.teams_app_id == ""
    assert cfg.post_empty_digest and cfg.database_migrate


def test_every_name_the_operator_renders_is_read() -> None:
    env = {
        contract.PIPELINE: "p", contract.POD_NAME: "pod-1", contract.SERVICEBUS_QUEUE: "q",
        contract.SERVICEBUS_CONNECTION_STRING: "Endpoint=sb://localhost:5672/;SharedAccessKeyName=a;SharedAccessKey=b",
        contract.MAX_DELIVERY_COUNT: "5", contract.CONCURRENCY: "16", contract.PREFETCH: "20",
        contract.MAX_LOCK_RENEWAL_SECONDS: "600", contract.DRAIN_SECONDS: "55", contract.METRICS_PORT: "9090",
        contract.TEAMS_APP_ID: "00000000-0000-0000-0000-000000000001", contract.TEAMS_APP_TYPE: "SingleTenant",
        contract.TEAMS_TENANT_ID: "00000000-0000-0000-0000-000000000002", contract.TEAMS_APP_PASSWORD: "pw",
        contract.DATABASE_URL: "postgresql://u:p@db/digests",
    }
    cfg = load(env)
    assert (cfg.pipeline, cfg.pod_name, cfg.max_delivery_count, cfg.concurrency, cfg.prefetch) == ("p", "pod-1", 5, 16,
                                                                                                   20)
    assert (cfg.max_lock_renewal_seconds, cfg.drain_seconds, cfg.metrics_port) == (600, 55.0, 9090)
    assert (cfg.teams_app_type, cfg.teams_tenant_id, cfg.teams_app_password) == (
        "SingleTenant", "00000000-0000-0000-0000-000000000002", "pw")
    assert cfg.database_url == "postgresql+asyncpg://u:p@db/digests"
    assert "pw" not in repr(cfg) and "SharedAccessKey" not in repr(cfg)


def test_every_problem_is_listed_at_once_without_secrets() -> None:
    env = {
        contract.CONCURRENCY: "many", contract.PREFETCH: "-1", contract.METRICS_PORT: "70000",
        contract.TEAMS_APP_TYPE: "SingleTenant", contract.TEAMS_APP_PASSWORD: "hunter2",
        contract.DATABASE_URL: "mysql://root:hunter2@db/x", contract.POST_EMPTY_DIGEST: "maybe",
        contract.SOURCE: "no_colon", contract.TEAMS_LOGIN_URL: "http://plain",
    }
    with pytest.raises(ConfigError) as info:
        load(env)
    problems = info.value.problems
    text = str(info.value)
    for fragment in [contract.SERVICEBUS_QUEUE, f"{contract.SERVICEBUS_NAMESPACE} or", f"{contract.CONCURRENCY}='many'",
                     f"{contract.PREFETCH}='-1'", f"{contract.METRICS_PORT}='70000'",
                     f"{contract.TEAMS_APP_ID}: required", f"{contract.TEAMS_TENANT_ID}: required",
                     contract.DATABASE_URL, contract.POST_EMPTY_DIGEST, contract.SOURCE, contract.TEAMS_LOGIN_URL]:
        assert fragment in text, fragment
    assert len(problems) == 11
    assert "hunter2" not in text


@pytest.mark.parametrize(("env", "fragment"), [
    ({contract.TEAMS_APP_ID: "x"}, "set both"),
    ({contract.TEAMS_APP_TYPE: "UserAssignedMSI", contract.TEAMS_APP_ID: "x"}, f"{contract.TEAMS_TENANT_ID}: required"),
    ({contract.TEAMS_APP_TYPE: "Bogus"}, "one of MultiTenant"),
    ({contract.SERVICEBUS_CONNECTION_STRING: "nonsense"}, "has no Endpoint="),
    ({contract.SERVICEBUS_NAMESPACE: "sb://ns/"}, "expected a host name"),
    ({contract.LOG_LEVEL: "loud"}, contract.LOG_LEVEL),
])
def test_single_problems(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load({**BASE, **env})


def test_user_assigned_msi_and_anonymous_are_valid() -> None:
    assert load({**BASE, contract.TEAMS_APP_TYPE: "UserAssignedMSI", contract.TEAMS_APP_ID: "x",
                 contract.TEAMS_TENANT_ID: "t"}).teams_app_type == "UserAssignedMSI"
    assert load({**BASE, contract.TEAMS_APP_ID: "", contract.TEAMS_APP_PASSWORD: ""}).teams_app_id == ""


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u@h/d", "postgresql+asyncpg://u@h/d"),
    ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
    ("postgresql+psycopg://u@h/d", "postgresql+asyncpg://u@h/d"),
    ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
])
def test_async_database_urls(url: str, expected: str) -> None:
    assert async_database_url(url) == expected


def test_bad_database_urls() -> None:
    with pytest.raises(ValueError, match="not a URL"):
        async_database_url("nothing")
