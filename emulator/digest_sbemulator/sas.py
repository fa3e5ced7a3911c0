"""Shared access signature tokens, as the SDK puts them on `$cbs`: `SharedAccessSignature sr=&sig=&se=&skn=`."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs, quote_plus


class TokenRejected(Exception):
    """The token is malformed, names an unknown key, has a wrong signature or has expired."""


def signature(resource: str, expiry: int, key: str) -> str:
    to_sign = f"{quote_plus(resource)}\n{expiry}".encode()
    return base64.b64encode(hmac.new(key.encode(), to_sign, hashlib.sha256).digest()).decode()


def validate(token: str, keys: Mapping[str, str], now: float) -> str:
    """Check a SAS token against the configured keys; returns the key name it was signed with."""
    scheme, _, query = token.partition(" ")
    if scheme != "SharedAccessSignature" or not query:
        raise TokenRejected("not a SharedAccessSignature token")
    fields = {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}
    missing = [name for name in ("sr", "sig", "se", "skn") if not fields.get(name)]
    if missing:
        raise TokenRejected(f"the token lacks {', '.join(missing)}")
    key = keys.get(fields["skn"])
    if key is None:
        raise TokenRejected(f"unknown shared access key name {fields['skn']!r}")
    try:
        expiry = int(fields["se"])
    except ValueError:
        raise TokenRejected("se is not a number") from None
    if not hmac.compare_digest(signature(fields["sr"], expiry, key), fields["sig"]):
        raise TokenRejected("the signature does not match the shared access key")
    if expiry <= now:
        raise TokenRejected("the token has expired")
    return fields["skn"]
