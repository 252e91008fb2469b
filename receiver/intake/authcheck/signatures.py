"""DKIM and ARC: which keys a message needs (on the loop, a bounded scan), and the
verification itself (in a worker process, with dkimpy).

The loop reads only the header fields: the signatures' `d=` and `s=` tags, to fetch the
keys through our resolver. The worker gets the message and the keys as fetched and runs
dkimpy with a `dnsfunc` that answers from them, so dkimpy never touches the network.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "HASH_BUDGET",
    "MAX_SIGNATURES",
    "KeyNeed",
    "header_fields",
    "key_needs",
    "key_outside_bounds",
    "verify",
]

MAX_SIGNATURES = 8  # DKIM-Signature fields verified per message; later ones are ignored
# Bytes of body one message may have hashed across its signatures: a sender cannot hold a
# verification worker with many signatures over a large body (8 x 9 MB). Past the budget
# a signature is not verified (temperror, "too much to hash"), never a wait.
HASH_BUDGET = 16 * 1024 * 1024
# RFC 8301 3.2: verifiers validate RSA keys of 1024 to 4096 bits. A longer modulus, or a
# public exponent past this, would make one verification cost what a sender likes.
RSA_BITS = (1024, 4096)
MAX_EXPONENT = (1 << 32) - 1
MAX_ARC_SETS = 8  # ARC instances read (RFC 8617 4.2.1 caps the chain at 50)
_END = re.compile(rb"\r\n\r\n")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
_FIELDS = (b"dkim-signature", b"arc-seal", b"arc-message-signature")
# The d= and s= tags of a tag-list (RFC 6376 3.2): the rest is dkimpy's, in the worker.
_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;]*)")
_S = re.compile(r"(?:^|;)\s*s\s*=\s*([^;]*)")
_FWS = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")


@dataclass(frozen=True, slots=True)
class KeyNeed:
    """One signature: which header, its domain and selector, and the key's DNS name."""

    field: str  # dkim-signature, arc-seal or arc-message-signature
    domain: str
    selector: str

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def header_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of each header field, in order. Linear in the header
    section, which the session's scan has capped already (mailstore.headers)."""
    end = _END.search(raw)
    head = raw[: end.start() + 2] if end is not None else raw
    fields = []
    for chunk in _FIELD_END.split(head):
        name, colon, value = chunk.partition(b":")
        if colon:
            fields.append((name.strip().lower(), value))
    return fields


def key_needs(fields: list[tuple[bytes, bytes]]) -> tuple[list[KeyNeed | None], bool]:
    """The DKIM signatures (None for one without usable `d=`/`s=`: a permerror), and
    whether the message carries ARC sets; every key name appears in the needs."""
    needs: list[KeyNeed | None] = []
    arc = False
    counts = {name: 0 for name in _FIELDS}
    for name, value in fields:
        if name not in counts:
            continue
        counts[name] += 1
        limit = MAX_SIGNATURES if name == b"dkim-signature" else MAX_ARC_SETS
        if counts[name] > limit:
            continue
        arc = arc or name != b"dkim-signature"
        text = value[:8192].decode("ascii", "replace")
        domain, selector = _tag(_D, text), _tag(_S, text)
        usable = _NAME.fullmatch(domain) and _NAME.fullmatch(selector)
        need = KeyNeed(name.decode(), domain, selector) if usable else None
        if name == b"dkim-signature" or need is not None:
            needs.append(need)
    return needs, arc


def hashed_bytes(raw: bytes) -> int:
    """What one signature over the whole body costs to hash, roughly: the body's length."""
    end = _END.search(raw)
    return len(raw) - end.end() if end is not None else 0


def key_outside_bounds(record: str) -> str | None:
    """Why a DKIM key record may not be used (RFC 8301: an RSA key of more than 4096 bits
    or an exponent past 2^32 - 1), or None; decided on the loop in microseconds (a record
    is at most one UDP answer) before any work reaches a verification worker."""
    tags = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (part.partition("=") for part in record.split(";"))
    )
    if tags.get("k", "rsa").lower() != "rsa":
        return None  # ed25519 keys have one size
    try:
        der = base64.b64decode(_FWS.sub("", tags.get("p", "")), validate=True)
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        return None  # unusable: dkimpy says so in the worker (permerror)
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    numbers = key.public_numbers()
    if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
        return f"an RSA key of {key.key_size} bits (RFC 8301: 1024 to 4096)"
    if numbers.e > MAX_EXPONENT:
        return f"an RSA exponent of {numbers.e.bit_length()} bits"
    return None


def _tag(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return _FWS.sub("", match[1]).lower() if match is not None else ""


# --- in the worker process ------------------------------------------------------------


def verify(
    raw: bytes, keys: dict[str, str], todo: list[tuple[int, str]], arc: bool
) -> dict[str, object]:
    """Verify the DKIM signatures `todo` ((index among the message's DKIM-Signature
    fields, key name)) and, if `arc`, the ARC chain, with the keys given (name -> TXT
    record). Runs in a worker: plain values in and out."""
    import dkim  # imported in the worker only: the receiver process never loads dkimpy

    logging.getLogger("dkimpy").setLevel(logging.CRITICAL)  # verdicts carry the reasons

    def dnsfunc(name: bytes, timeout: float = 0.0) -> bytes:
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."), "").encode()

    results: dict[int, tuple[str, str]] = {}
    checker = dkim.DKIM(raw, minkey=1024)
    for index, name in todo:
        try:
            dkim.load_pk_from_dns(name.encode(), dnsfunc)
        except (dkim.DKIMException, ValueError) as error:
            results[index] = ("permerror", "bad key: " + _short(error))
            continue
        try:
            ok = checker.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.ValidationError as error:
            results[index] = ("fail", _short(error))
            continue
        except dkim.DKIMException as error:
            results[index] = ("permerror", _short(error))
            continue
        if not ok:
            results[index] = ("fail", "signature did not verify")
        elif (unsigned := _unsigned(checker)) > 0:
            # RFC 6376 8.2: text after l= octets is anyone's to append; a signature that
            # leaves some unsigned does not vouch for the message as shown (RFC 8601
            # 2.7.1 `policy`: signed, but not acceptable), so it aligns nothing for DMARC.
            results[index] = ("policy", f"l= leaves {unsigned} octets of the body unsigned")
        else:
            results[index] = ("pass", "")
    outcome: dict[str, object] = {"dkim": results}
    if arc:
        cv, sets, reason = dkim.arc_verify(raw, dnsfunc=dnsfunc)
        outcome["arc"] = (cv.decode("ascii", "replace") if cv else "fail", _sealed(sets, reason))
    return outcome


def _unsigned(checker: object) -> int:
    """Octets of the canonicalized body past the `l=` of the signature `checker` has just
    verified (0 without `l=`)."""
    import dkim

    assert isinstance(checker, dkim.DKIM)
    fields = checker.signature_fields
    if b"l" not in fields:
        return 0
    policy = dkim.CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
    return max(0, len(policy.canonicalize_body(checker.body)) - int(fields[b"l"]))


def _sealed(sets: list[dict[str, object]], reason: object) -> str:
    """The ARC reason naming who sealed the newest set (its ARC-Seal's d=): a chain
    vouches only for what its sealer says, and anyone can seal a chain of their own."""
    newest = sets[0] if sets else {}
    domain = newest.get("as-domain")
    if not isinstance(domain, bytes):
        return str(reason)[:120]
    sealer = domain.decode("ascii", "replace")[:100]
    return f"sealed by {sealer} (i={newest.get('instance')}): {reason}"[:160]


def _short(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:120]
