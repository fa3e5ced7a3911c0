"""Operator settings from the environment, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        floats = ("resync_seconds", "request_timeout", "watch_server_timeout", "watch_client_timeout", "retry_delay")
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
        if problems:
            raise ConfigError("invalid operator configuration:\n  " + "\n  ".join(problems))
        return cls(**values)  # type: ignore[arg-type]
