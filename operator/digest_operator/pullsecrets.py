"""Pure: registry credentials for a host from `kubernetes.io/dockerconfigjson` Secrets (as the kubelet reads them)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from digest_operator.registry import DOCKER_HUB, DOCKER_HUB_ALIASES, Credentials

DOCKER_CONFIG_JSON = ".dockerconfigjson"


def _host(key: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `registry.example.com:5000/path` → `registry.example.com:5000`."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def _entry_credentials(entry: Any) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, secret = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if sep and user:
            return Credentials(user, secret)
    return None


def docker_config(secret: dict[str, Any]) -> dict[str, Any]:
    """The decoded `.dockerconfigjson` of a Secret; {} when it has none or it is not valid JSON."""
    data = (secret.get("data") or {}).get(DOCKER_CONFIG_JSON)
    if not isinstance(data, str):
        return {}
    try:
        decoded = json.loads(base64.b64decode(data))
    except (binascii.Error, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def credentials_for(host: str, secrets: Iterable[dict[str, Any]]) -> Credentials | None:
    """The first credentials for `host` among `secrets`, in the order of the pod's `imagePullSecrets`."""
    wanted = _host(host)
    for secret in secrets:
        auths = docker_config(secret).get("auths")
        if not isinstance(auths, dict):
            continue
        for key, entry in auths.items():
            if _host(str(key)) == wanted:
                found = _entry_credentials(entry)
                if found is not None:
                    return found
    return None
