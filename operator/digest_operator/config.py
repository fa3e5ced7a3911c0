"""Operator settings from the environment, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

WebhookMode = Literal["off", "validate", "mutate"]
FailurePolicy = Literal["Fail", "Ignore"]

PREFIX = "DIGEST_OPERATOR_"


class ConfigError(ValueError):
    """Every invalid setting, named as `DIGEST_OPERATOR_NAME=value: problem`."""


@dataclass(frozen=True)
class OperatorConfig:
    field_manager: str = "digest-operator"
    resync_seconds: float = 60.0
    """Interval of the level-triggered timer that repairs drift and refreshes status."""
    request_timeout: float = 30.0
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    retry_delay: float = 15.0
    """Delay before a failed reconcile is retried (Kopf's default backoff)."""
    error_backoffs: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    """Kopf's API-level retries of its own requests (watches, status patches, events)."""
    peering_lifetime: int = 60
    registry_timeout: float = 10.0
    """Timeout of one tag resolution (HEAD, token, GET)."""
    resolve_backoff: float = 10.0
    """Delay after the first failed resolution; doubles per failure up to `resolve_backoff_max`."""
    resolve_backoff_max: float = 300.0
    insecure_registries: tuple[str, ...] = ()
    """Registry hosts (`host:port`) spoken to over plain HTTP, e.g. a registry on loopback."""
    registry_ca_file: str | None = None
    """PEM bundle of extra CAs trusted for registries (a registry with a private CA)."""
    webhook: WebhookMode = "off"
    """Admission webhook: off, validate (deny tag-only images under imagePolicy Require) or mutate (also rewrite a
    tag into its digest at admission)."""
    webhook_addr: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_host: str | None = None
    """Host name the API server calls, e.g. `digest-operator-webhook.digest-system.svc`."""
    webhook_cert_dir: str | None = None
    """Directory with `tls.crt`, `tls.key` and `ca.crt` (e.g. a cert-manager Secret); without it the operator
    generates a CA and a serving certificate at start-up."""
    webhook_failure_policy: FailurePolicy = "Fail"
    webhook_configuration: str = "digest.dev"
    """Name of the webhook configurations the operator writes itself; empty: install them yourself."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        floats = ("resync_seconds", "request_timeout", "watch_server_timeout", "watch_client_timeout", "retry_delay",
                  "registry_timeout", "resolve_backoff", "resolve_backoff_max")
        for name in floats:
            key = PREFIX + name.upper()
            if key in env:
                try:
                    number = float(env[key])
                    if number <= 0:
                        raise ValueError
                    values[name] = number
                except ValueError:
                    problems.append(f"{key}={env[key]}: must be a positive number of seconds")
        key = PREFIX + "ERROR_BACKOFFS"
        if key in env:
            try:
                backoffs = tuple(float(x) for x in env[key].split(",") if x.strip())
                if not backoffs or any(b < 0 for b in backoffs):
                    raise ValueError
                values["error_backoffs"] = backoffs
            except ValueError:
                problems.append(f"{key}={env[key]}: must be a comma-separated list of seconds, e.g. 1,2,4")
        key = PREFIX + "FIELD_MANAGER"
        if key in env:
            if env[key].strip():
                values["field_manager"] = env[key].strip()
            else:
                problems.append(f"{key}: must not be empty")
        key = PREFIX + "PEERING_LIFETIME"
        if key in env:
            try:
                values["peering_lifetime"] = int(env[key])
            except ValueError:
                problems.append(f"{key}={env[key]}: must be an integer number of seconds")
        key = PREFIX + "INSECURE_REGISTRIES"
        if key in env:
            values["insecure_registries"] = tuple(h.strip() for h in env[key].split(",") if h.strip())
        choices = {"webhook": ("off", "validate", "mutate"), "webhook_failure_policy": ("Fail", "Ignore")}
        for name, allowed in choices.items():
            key = PREFIX + name.upper()
            if key in env:
                if env[key] in allowed:
                    values[name] = env[key]
                else:
                    problems.append(f"{key}={env[key]}: must be one of {', '.join(allowed)}")
        optional = ("webhook_host", "webhook_cert_dir", "registry_ca_file")
        for name in ("webhook_addr", "webhook_configuration", *optional):
            key = PREFIX + name.upper()
            if key in env:
                values[name] = env[key].strip() or (None if name in optional else "")
        key = PREFIX + "WEBHOOK_PORT"
        if key in env:
            if env[key].isdigit() and 0 < int(env[key]) < 65536:
                values["webhook_port"] = int(env[key])
            else:
                problems.append(f"{key}={env[key]}: must be a TCP port number")
        if problems:
            raise ConfigError("invalid operator configuration:\n  " + "\n  ".join(problems))
        return cls(**values)  # type: ignore[arg-type]
