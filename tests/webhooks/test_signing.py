"""Signatures: verified with the Standard Webhooks algorithm written here from the
specification, independently of webhooks.signing, and against the specification's own
example."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from webhooks import signing


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' verification: strip `whsec_`, base64-decode the key, HMAC-SHA256
    over `id.timestamp.body`, compare with every `v1,` signature of the header."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}"
    expected = base64.b64encode(hmac.new(key, content.encode(), hashlib.sha256).digest())
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def test_the_specifications_example_signs_to_its_published_signature() -> None:
    # The example of the Standard Webhooks specification (and its reference libraries' tests).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    got = signing.signature(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_an_independent_implementation() -> None:
    secret = signing.new_secret()
    body = '{"type":"message.received","data":{"subject":"héllo"}}'.encode()
    headers = signing.headers(secret, "msg_abc_wh_1", 1_800_000_000, body)
    assert headers["webhook-id"] == "msg_abc_wh_1"
    assert headers["webhook-timestamp"] == "1800000000"
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(signing.new_secret(), headers, body)


def test_a_secret_is_whsec_and_32_random_bytes() -> None:
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(signing.key_of(secret)) == 32


def test_a_secret_without_its_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signing.key_of("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
