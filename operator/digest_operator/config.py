"""Operator settings from the environment, validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

WebhookMode = Literal["off", "validate", "mutate"]
FailurePolicy = Literal["Fail", "Ignore"]

PREFIX = "DIGEST_OPERATOR_"


class ConfigError(ValueError):
    """Every invalid setting, named as `DIGEST_OPERATOR_NAME=value: problem`."""


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_service(value: str) -> tuple[str, str, int]:
    """`NAMESPACE/NAME[:PORT]` → (namespace, name, port); port 443 by default. ValueError when malformed."""
    ref, _, port_text = value.strip().partition(":")
    namespace, _, name = ref.partition("/")
    port = int(port_text) if port_text.isdigit() else (443 if not port_text else 0)
    if not (_DNS_LABEL.match(namespace) and _DNS_LABEL.match(name) and 0 < port < 65536):
        raise ValueError(value)
    return namespace, name, port


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
    allowed_registries: tuple[str, ...] = ()
    """Registry hosts Resolve, Track and the mutating webhook may contact (empty: any); others are refused with
    ImagePinned=False, reason RegistryNotAllowed."""
    registry_token_hosts: tuple[str, ...] = ()
    """Host names, besides a registry's own, whose token realm may receive pull-secret credentials."""
    registry_ca_file: str | None = None
    """PEM bundle of extra CAs trusted for registries (a registry with a private CA)."""
    webhook: WebhookMode = "off"
    """Admission webhook: off, validate (deny tag-only images under imagePolicy Require) or mutate (also rewrite a
    tag into its digest at admission)."""
    webhook_addr: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_host: str | None = None
    """Host name or IP in a `clientConfig.url` (`https://HOST:PORT/...`), for an API server that reaches the operator
    directly (a local control plane, the operator running outside the cluster). Not with `webhook_service`."""
    webhook_service: str | None = None
    """`NAMESPACE/NAME[:PORT]` of the Service in front of the webhook (port default 443): the configuration then
    uses `clientConfig.service`, and the serving certificate is for `NAME.NAMESPACE.svc[.cluster.local]`."""
    webhook_cert_dir: str | None = None
    """Directory with `tls.crt`, `tls.key` and optionally `ca.crt` (e.g. a mounted cert-manager Secret), re-read
    every `webhook_refresh_seconds`."""
    webhook_cert_secret: str | None = None
    """`NAMESPACE/NAME` of a Secret in which the operator keeps its own CA and serving certificate, shared by all
    replicas (filled by the first replica, renewed before expiry). Without it and without `webhook_cert_dir`, each
    process makes its own (one replica only: development and tests)."""
    webhook_client_ca_file: str | None = None
    """PEM bundle of the CAs whose client certificates the webhook accepts; set, a caller without such a
    certificate fails the TLS handshake (configure the API server to present one: docs/pinning.md)."""
    webhook_refresh_seconds: float = 60.0
    """Interval at which the certificates are re-read (and renewed) and the webhook configurations re-asserted."""
    webhook_failure_policy: FailurePolicy = "Fail"
    webhook_configuration: str = "digest.dev"
    """Name of the webhook configurations the operator writes itself; empty: install them yourself."""

    @property
    def webhook_service_ref(self) -> tuple[str, str, int] | None:
        """(namespace, name, port) of `webhook_service`."""
        return parse_service(self.webhook_service) if self.webhook_service else None

    @property
    def webhook_cert_secret_ref(self) -> tuple[str, str] | None:
        """(namespace, name) of `webhook_cert_secret`."""
        if not self.webhook_cert_secret:
            return None
        namespace, _, name = self.webhook_cert_secret.partition("/")
        return namespace, name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        floats = ("resync_seconds", "request_timeout", "watch_server_timeout", "watch_client_timeout", "retry_delay",
                  "registry_timeout", "resolve_backoff", "resolve_backoff_max", "webhook_refresh_seconds")
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
        for name in ("insecure_registries", "allowed_registries", "registry_token_hosts"):
            key = PREFIX + name.upper()
            if key in env:
                values[name] = tuple(h.strip() for h in env[key].split(",") if h.strip())
        choices = {"webhook": ("off", "validate", "mutate"), "webhook_failure_policy": ("Fail", "Ignore")}
        for name, allowed in choices.items():
            key = PREFIX + name.upper()
            if key in env:
                if env[key] in allowed:
                    values[name] = env[key]
                else:
                    problems.append(f"{key}={env[key]}: must be one of {', '.join(allowed)}")
        optional = ("webhook_host", "webhook_service", "webhook_cert_dir", "webhook_cert_secret", "registry_ca_file",
                    "webhook_client_ca_file")
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
        problems += _webhook_problems(values)
        if problems:
            raise ConfigError("invalid operator configuration:\n  " + "\n  ".join(problems))
        return cls(**values)  # type: ignore[arg-type]


def _webhook_problems(values: Mapping[str, object]) -> list[str]:
    """The webhook settings that are malformed or contradict each other."""
    problems: list[str] = []
    service, secret = values.get("webhook_service"), values.get("webhook_cert_secret")
    if isinstance(service, str):
        try:
            parse_service(service)
        except ValueError:
            problems.append(f"{PREFIX}WEBHOOK_SERVICE={service}: must be NAMESPACE/NAME or NAMESPACE/NAME:PORT")
        if values.get("webhook_host"):
            problems.append(f"{PREFIX}WEBHOOK_SERVICE and {PREFIX}WEBHOOK_HOST: set one of them (a Service "
                            f"reference or a URL host)")
    if isinstance(secret, str):
        namespace, _, name = secret.partition("/")
        if not (_DNS_LABEL.match(namespace) and name and len(name) <= 253
                and all(_DNS_LABEL.match(part) for part in name.split("."))):
            problems.append(f"{PREFIX}WEBHOOK_CERT_SECRET={secret}: must be NAMESPACE/NAME")
        if values.get("webhook_cert_dir"):
            problems.append(f"{PREFIX}WEBHOOK_CERT_DIR and {PREFIX}WEBHOOK_CERT_SECRET: set one of them (mounted "
                            f"certificates or the operator's own)")
    return problems
