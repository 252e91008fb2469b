"""Real DKIM keys and signatures for the authentication tests and the benchmark.

Keys are made with `cryptography`; messages are signed with dkimpy, the verifier's own
library, as a sending MTA would (RFC 6376, relaxed/relaxed, rsa-sha256 or ed25519-sha256).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True)
class Key:
    private_pem: bytes  # what dkim.sign takes (for ed25519: the raw 32-octet seed, base64)
    record: str  # the TXT record published at <selector>._domainkey.<domain>
    algorithm: bytes


@cache
def rsa_key(bits: int = 2048, seed: int = 0) -> Key:
    """An RSA key (cached per `seed`: tests that need two different keys ask two seeds)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    return Key(pem, record, b"rsa-sha256")


@cache
def ed25519_key() -> Key:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()
    return Key(base64.b64encode(seed), record, b"ed25519-sha256")


def message(
    author: str = "Shop <noreply@shop.test>",
    to: str = "user@mx.test",
    subject: str = "Confirm your address",
    body: str = "Your code is 123456.\r\n",
    extra: bytes = b"",
) -> bytes:
    return (
        extra
        + (
            f"From: {author}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@shop.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            f"{body}"
        ).encode()
    )


def sign(raw: bytes, domain: str, selector: str, key: Key) -> bytes:
    """`raw` with a DKIM-Signature field on top."""
    header: bytes = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=SIGNED,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=key.algorithm,
    )
    return header + raw
