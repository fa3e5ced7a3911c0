"""SAS tokens made by the SDK's own generator are accepted; wrong keys, tampering and expiry are refused."""

from __future__ import annotations

import pytest
from azure.servicebus._pyamqp import utils

from digest_sbemulator.sas import TokenRejected, validate


def generate_sas_token(audience: str, policy: str, key: str, expiry: int) -> str:
    """The SDK's own token generator (untyped upstream)."""
    token: str = utils.generate_sas_token(audience, policy, key, expiry)  # type: ignore[no-untyped-call]
    return token

KEYS = {"RootManageSharedAccessKey": "SAS_KEY_VALUE"}
AUDIENCE = "sb://127.0.0.1:5672/orders"


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
