"""Shared access signature tokens, as the SDKs put them on `$cbs` and in HTTP `Authorization` headers:
`SharedAccessSignature sr=&sig=&se=&skn=`.

The signature covers the `sr` value exactly as the token carries it (still URL-encoded) plus `se`, as the service
checks it: the SDKs encode the resource differently (Python `quote_plus`: `%3A`; Go `strings.ToLower(
url.QueryEscape(uri))`: `%3a`, which KEDA's admin client sends), so decoding and re-encoding it would reject
valid tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import unquote_plus


class TokenRejected(Exception):
    """The token is malformed, names an unknown key, has a wrong signature or has expired."""


def signature(encoded_resource: str, expiry: int, key: str) -> str:
    """The base64 HMAC-SHA256 of `encoded_resource` (the token's `sr`, as sent) and `expiry`."""
    to_sign = f"{encoded_resource}\n{expiry}".encode()
    return base64.b64encode(hmac.new(key.encode(), to_sign, hashlib.sha256).digest()).decode()


def _fields(query: str) -> dict[str, str]:
    """The token's fields; `sr` raw (what was signed), the others URL-decoded. The first of a repeated name wins."""
    fields: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        fields.setdefault(name, value if name == "sr" else unquote_plus(value))
    return fields


def validate(token: str, keys: Mapping[str, str], now: float) -> str:
    """Check a SAS token against the configured keys; returns the key name it was signed with."""
    scheme, _, query = token.partition(" ")
    if scheme != "SharedAccessSignature" or not query:
        raise TokenRejected("not a SharedAccessSignature token")
    fields = _fields(query)
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
