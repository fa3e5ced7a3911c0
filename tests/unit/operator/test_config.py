"""Operator settings from the environment."""

from __future__ import annotations

import pytest

from digest_operator.config import ConfigError, OperatorConfig


def test_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert config.resync_seconds == 60
    assert config.field_manager == "digest-operator"
    assert config.error_backoffs == (1, 2, 4, 8, 16)


def test_values_are_read() -> None:
    config = OperatorConfig.from_env({
        "DIGEST_OPERATOR_RESYNC_SECONDS": "2.5", "DIGEST_OPERATOR_RETRY_DELAY": "1",
        "DIGEST_OPERATOR_ERROR_BACKOFFS": "0.1, 0.2", "DIGEST_OPERATOR_WATCH_SERVER_TIMEOUT": "30",
        "DIGEST_OPERATOR_FIELD_MANAGER": "mine", "DIGEST_OPERATOR_PEERING_LIFETIME": "10",
    })
    assert (config.resync_seconds, config.retry_delay, config.error_backoffs) == (2.5, 1.0, (0.1, 0.2))
    assert (config.watch_server_timeout, config.field_manager, config.peering_lifetime) == (30.0, "mine", 10)


def test_every_problem_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env({"DIGEST_OPERATOR_RESYNC_SECONDS": "-1", "DIGEST_OPERATOR_FIELD_MANAGER": " ",
                                 "DIGEST_OPERATOR_PEERING_LIFETIME": "long"})
    text = str(info.value)
    assert "DIGEST_OPERATOR_RESYNC_SECONDS=-1: must be a positive number of seconds" in text
    assert "DIGEST_OPERATOR_FIELD_MANAGER: must not be empty" in text
    assert "DIGEST_OPERATOR_PEERING_LIFETIME=long" in text


def test_pinning_and_webhook_settings() -> None:
    config = OperatorConfig.from_env({
        "DIGEST_OPERATOR_INSECURE_REGISTRIES": "127.0.0.1:5000, localhost:5001",
        "DIGEST_OPERATOR_RESOLVE_BACKOFF": "2", "DIGEST_OPERATOR_WEBHOOK": "mutate",
        "DIGEST_OPERATOR_WEBHOOK_PORT": "8443", "DIGEST_OPERATOR_WEBHOOK_FAILURE_POLICY": "Ignore",
        "DIGEST_OPERATOR_WEBHOOK_HOST": "digest-operator-webhook.digest-system.svc",
        "DIGEST_OPERATOR_REGISTRY_CA_FILE": "/etc/ssl/registry-ca.pem",
        "DIGEST_OPERATOR_ALLOWED_REGISTRIES": "ghcr.io, contoso.azurecr.io",
        "DIGEST_OPERATOR_REGISTRY_TOKEN_HOSTS": "login.contoso.example",
        "DIGEST_OPERATOR_WEBHOOK_CLIENT_CA_FILE": "/etc/digest/apiserver-client-ca.pem",
    })
    assert config.webhook_client_ca_file == "/etc/digest/apiserver-client-ca.pem"
    assert OperatorConfig.from_env({}).webhook_client_ca_file is None
    assert config.registry_ca_file == "/etc/ssl/registry-ca.pem"
    assert config.allowed_registries == ("ghcr.io", "contoso.azurecr.io")
    assert config.registry_token_hosts == ("login.contoso.example",)
    assert config.insecure_registries == ("127.0.0.1:5000", "localhost:5001")
    assert (config.resolve_backoff, config.webhook, config.webhook_port) == (2.0, "mutate", 8443)
    assert config.webhook_failure_policy == "Ignore"
    assert config.webhook_host == "digest-operator-webhook.digest-system.svc"
    assert OperatorConfig.from_env({}).webhook == "off"
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env({"DIGEST_OPERATOR_WEBHOOK": "on", "DIGEST_OPERATOR_WEBHOOK_FAILURE_POLICY": "fail"})
    assert "DIGEST_OPERATOR_WEBHOOK=on: must be one of off, validate, mutate" in str(info.value)
    assert "DIGEST_OPERATOR_WEBHOOK_FAILURE_POLICY=fail: must be one of Fail, Ignore" in str(info.value)
