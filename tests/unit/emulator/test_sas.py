"""SAS tokens made by the SDK's own generator are accepted; wrong keys, tampering and expiry are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest
from azure.servicebus._pyamqp import utils

from digest_sbemulator.sas import TokenRejected, validate


def generate_sas_token(audience: str, policy: str, key: str, expiry: int) -> str:
    """The SDK's own token generator (untyped upstream)."""
    token: str = utils.generate_sas_token(audience, policy, key, expiry)  # type: ignore[no-untyped-call]
    return token

KEYS = {"RootManageSharedAccessKey": "SAS_KEY_VALUE"}
AUDIENCE = "sb://127.0.0.1:5672/orders"


def go_sdk_token(uri: str, policy: str, key: str, expiry: int) -> str:
    """A token as the Go SDK's `sas.Signer.SignWithExpiry` makes it (azservicebus v1.10, which KEDA's admin client
    uses): audience `strings.ToLower(url.QueryEscape(uri))`, signed as sent, the signature `url.QueryEscape`d."""
    audience = quote(uri, safe="-_.~").lower()
    digest = hmac.new(key.encode(), f"{audience}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="-_.~")
    return f"SharedAccessSignature sr={audience}&sig={sig}&se={expiry}&skn={policy}"


def test_go_sdk_token_with_lowercase_escapes_is_accepted() -> None:
    token = go_sdk_token("https://10.244.0.1:5672/digest-scaling", "RootManageSharedAccessKey", "SAS_KEY_VALUE",
                         2_000)
    assert "%3a%2f%2f" in token  # what used to be decoded and re-encoded as %3A%2F%2F, breaking the signature
    assert validate(token, KEYS, now=1_000) == "RootManageSharedAccessKey"
    with pytest.raises(TokenRejected, match="signature"):
        validate(go_sdk_token("https://10.244.0.1:5672/other", "RootManageSharedAccessKey", "WRONG", 2_000),
                 KEYS, now=1_000)


def test_sdk_token_is_accepted() -> None:
    token = generate_sas_token(AUDIENCE, "RootManageSharedAccessKey", "SAS_KEY_VALUE", 2_000)
    assert validate(token, KEYS, now=1_000) == "RootManageSharedAccessKey"


@pytest.mark.parametrize(("policy", "key", "expiry", "now", "message"), [
    ("RootManageSharedAccessKey", "WRONG", 2_000, 1_000, "signature does not match"),
    ("Other", "SAS_KEY_VALUE", 2_000, 1_000, "unknown shared access key name"),
    ("RootManageSharedAccessKey", "SAS_KEY_VALUE", 1_000, 1_500, "expired"),
])
def test_bad_tokens_are_refused(policy: str, key: str, expiry: int, now: int, message: str) -> None:
    with pytest.raises(TokenRejected, match=message):
        validate(generate_sas_token(AUDIENCE, policy, key, expiry), KEYS, now=now)


def test_tampered_and_malformed_tokens_are_refused() -> None:
    token = generate_sas_token(AUDIENCE, "RootManageSharedAccessKey", "SAS_KEY_VALUE", 2_000)
    with pytest.raises(TokenRejected, match="signature"):
        validate(token.replace("orders", "payments"), KEYS, now=1_000)
    with pytest.raises(TokenRejected, match="not a SharedAccessSignature"):
        validate("Bearer abc", KEYS, now=0)
    with pytest.raises(TokenRejected, match="lacks"):
        validate("SharedAccessSignature sr=x&se=1", KEYS, now=0)
