"""A message's verdicts (receiver.intake.authcheck.check): SPF from MAIL FROM, DKIM signatures made
with real keys and verified in real worker processes, DMARC alignment and policy, ARC;
every key, policy and record served by a DNS server on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import dkim
import pytest

from mailstore.message import MessageDocument
from receiver.intake.authcheck import AuthChecker, AuthConfig
from receiver.intake.authcheck.dmarc import encoded_from, from_domain
from receiver.resolver import Resolver
from tests.support import dkimkeys
from tests.support.dnsserver import TIMEOUT, DnsServer, Record, closed_port

KEY = dkimkeys.rsa_key()
OTHER = dkimkeys.rsa_key(seed=1)
ED = dkimkeys.ed25519_key()
SHOP = "127.0.0.2"  # the shop's outgoing server
STRANGER = "127.0.0.9"

RECORDS = {
    "TXT:shop.test": Record.txt("v=spf1 ip4:127.0.0.2 -all"),
    "TXT:mail.shop.test": Record.txt("v=spf1 a -all"),
    "A:mail.shop.test": Record.a(SHOP),
    "TXT:bounce.shop.test": Record.txt("v=spf1 ip4:127.0.0.2 -all"),
    "TXT:s1._domainkey.shop.test": Record.txt(KEY.record),
    "TXT:ed._domainkey.shop.test": Record.txt(ED.record),
    "TXT:_dmarc.shop.test": Record.txt("v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@shop.test"),
    "TXT:esp.test": Record.txt("v=spf1 ip4:127.0.0.3 -all"),
    "TXT:k._domainkey.esp.test": Record.txt(OTHER.record),
    "TXT:_dmarc.strict.test": Record.txt("v=DMARC1; p=none; aspf=s; adkim=s"),
    "TXT:strict.test": Record.txt("v=spf1 ip4:127.0.0.2 -all"),
    "TXT:b.strict.test": Record.txt("v=spf1 ip4:127.0.0.2 -all"),
    "TXT:arc._domainkey.lists.test": Record.txt(KEY.record),
    "TXT:self._domainkey.evil.test": Record.txt(OTHER.record),
    "TXT:slowkey._domainkey.shop.test": TIMEOUT,
}


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(RECORDS) as server:
        yield server


async def _checker(port: int, **config: Any) -> AuthChecker:
    resolver = Resolver((("127.0.0.1", port),), max_in_flight=100, rate=1000)
    checker = AuthChecker(AuthConfig("mx.test", **({"dns_timeout": 0.5} | config)), resolver)
    await checker.open()
    # Up before the first check: a deadline measured here must not include their start.
    await checker.verifier.start(now=True)
    return checker


@pytest.fixture
async def checker(dns: DnsServer) -> AsyncIterator[AuthChecker]:
    checker = await _checker(dns.port)
    yield checker
    await checker.close()


def incoming(raw: bytes, sender: str, ip: str = SHOP, helo: str = "mail.shop.test") -> Any:
    return MessageDocument(
        id="01testtesttesttesttesttest",
        raw=raw,
        mail_from=sender,
        rcpt=("user@mx.test",),
        peer_ip=ip,
        helo=helo,
        received_at=datetime.now(UTC),
        received_header=b"Received: from mail.shop.test\r\n",
    )


async def check(
    checker: AuthChecker,
    raw: bytes,
    sender: str = "bounce@shop.test",
    ip: str = SHOP,
    helo: str = "mail.shop.test",
) -> MessageDocument:
    import asyncio

    pending = checker.begin(ip, helo, sender, asyncio.get_running_loop())
    result: MessageDocument = await pending.finish(incoming(raw, sender, ip, helo))
    return result


def signed(domain: str = "shop.test", selector: str = "s1", key: Any = KEY, **kw: Any) -> bytes:
    return dkimkeys.sign(dkimkeys.message(**kw), domain, selector, key)


async def test_signed_and_aligned_mail_passes_everything(checker: AuthChecker) -> None:
    out = await check(checker, signed())
    assert out.auth == {
        "spf": {"result": "pass", "domain": "shop.test", "reason": "matched ip4:127.0.0.2"},
        "helo": {"result": "pass", "domain": "mail.shop.test", "reason": "matched a"},
        "dkim": [{"result": "pass", "domain": "shop.test", "selector": "s1", "reason": ""}],
        "dmarc": {
            "result": "pass",
            "domain": "shop.test",
            "policy": "reject",
            "spf_aligned": True,
            "dkim_aligned": True,
            "reason": "aligned SPF, DKIM",
        },
        "arc": {"result": "none", "reason": ""},
    }
    assert out.received_header.startswith(b"Authentication-Results: mx.test;\r\n\tspf=pass")
    assert out.received_header.endswith(b"Received: from mail.shop.test\r\n")
    assert b"dkim=pass header.d=shop.test header.s=s1;" in out.received_header


async def test_an_altered_body_fails_dkim_and_dmarc_without_aligned_spf(
    checker: AuthChecker,
) -> None:
    raw = signed().replace(b"123456", b"654321")
    out = await check(checker, raw, sender="news@esp.test", ip="127.0.0.3")
    assert out.auth is not None
    assert out.auth["spf"]["result"] == "pass"  # the ESP's own domain
    [verdict] = out.auth["dkim"]
    assert verdict["result"] == "fail"
    assert "body hash mismatch" in verdict["reason"]
    dmarc = out.auth["dmarc"]
    assert (dmarc["result"], dmarc["spf_aligned"], dmarc["dkim_aligned"]) == ("fail", False, False)
    assert dmarc["policy"] == "reject"


async def test_spf_fail_from_a_stranger_with_a_valid_signature_still_passes_dmarc(
    checker: AuthChecker,
) -> None:
    out = await check(checker, signed(), ip=STRANGER, helo="stranger.test")
    assert out.auth is not None
    assert out.auth["spf"]["result"] == "fail"
    assert out.auth["helo"]["result"] == "none"
    assert out.auth["dmarc"]["result"] == "pass"
    assert out.auth["dmarc"]["dkim_aligned"] is True


async def test_a_missing_key_is_a_permerror(checker: AuthChecker) -> None:
    out = await check(checker, signed(selector="gone"))
    assert out.auth is not None
    assert out.auth["dkim"] == [
        {"result": "permerror", "domain": "shop.test", "selector": "gone", "reason": "no key"}
    ]
    assert out.auth["dmarc"]["result"] == "pass"  # SPF aligned


async def test_every_signature_is_reported_ed25519_included(checker: AuthChecker) -> None:
    raw = dkimkeys.sign(signed(), "shop.test", "ed", ED)
    raw = dkimkeys.sign(raw, "esp.test", "k", OTHER)
    out = await check(checker, raw)
    assert out.auth is not None
    assert [(d["domain"], d["selector"], d["result"]) for d in out.auth["dkim"]] == [
        ("esp.test", "k", "pass"),
        ("shop.test", "ed", "pass"),
        ("shop.test", "s1", "pass"),
    ]


async def test_relaxed_alignment_takes_the_organizational_domain(checker: AuthChecker) -> None:
    # From: a subdomain with no record of its own: the shop's sp= applies.
    out = await check(checker, signed(author="x@news.shop.test"), sender="b@bounce.shop.test")
    assert out.auth is not None
    dmarc = out.auth["dmarc"]
    assert (dmarc["result"], dmarc["domain"], dmarc["policy"]) == (
        "pass",
        "news.shop.test",
        "quarantine",
    )
    assert dmarc["spf_aligned"] and dmarc["dkim_aligned"]


async def test_strict_alignment_wants_the_same_name(checker: AuthChecker) -> None:
    raw = dkimkeys.message(author="a@strict.test")
    out = await check(checker, raw, sender="x@b.strict.test")
    assert out.auth is not None
    assert out.auth["spf"]["result"] == "pass"
    assert out.auth["dmarc"]["result"] == "fail"
    assert out.auth["dmarc"]["spf_aligned"] is False


async def test_no_dmarc_record_is_none_with_a_null_policy(checker: AuthChecker) -> None:
    raw = dkimkeys.message(author="someone@esp.test")
    out = await check(checker, raw, sender="news@esp.test", ip="127.0.0.3")
    assert out.auth is not None
    assert out.auth["dmarc"]["result"] == "none"
    assert out.auth["dmarc"]["policy"] is None
    assert out.auth["dkim"] == []
    assert b"dkim=none" in out.received_header


async def test_a_valid_arc_chain_passes(checker: AuthChecker) -> None:
    raw = dkimkeys.message(extra=b"Authentication-Results: lists.test; spf=pass\r\n")
    seal = dkim.arc_sign(
        raw,
        b"arc",
        b"lists.test",
        KEY.private_pem,
        b"lists.test",
        include_headers=[b"from", b"to", b"subject"],
    )
    out = await check(checker, b"".join(seal) + raw, ip=STRANGER)
    assert out.auth is not None
    assert out.auth["arc"]["result"] == "pass"
    assert out.auth["arc"]["reason"] == "sealed by lists.test (i=1): success"
    assert b"arc=pass (sealed by lists.test (i=1): success)" not in out.received_header
    assert b"arc=pass (sealed by lists.test i=1: success)" in out.received_header
    tampered = b"".join(seal) + raw.replace(b"123456", b"000000")
    out = await check(checker, tampered, ip=STRANGER)
    assert out.auth is not None
    assert out.auth["arc"]["result"] == "fail"


async def test_an_arc_set_an_attacker_sealed_for_itself_names_its_sealer(
    checker: AuthChecker,
) -> None:
    forged = b"Authentication-Results: evil.test; dkim=pass header.d=bank.test\r\n"
    raw = dkimkeys.message(author="CEO <ceo@bank.test>", extra=forged)
    seal = dkim.arc_sign(
        raw, b"self", b"evil.test", OTHER.private_pem, b"evil.test", include_headers=[b"from"]
    )
    out = await check(checker, b"".join(seal) + raw, sender="x@evil.test", ip=STRANGER)
    assert out.auth is not None
    assert out.auth["arc"] == {"result": "pass", "reason": "sealed by evil.test (i=1): success"}


async def test_text_past_a_dkim_length_is_unsigned_and_aligns_nothing(
    checker: AuthChecker,
) -> None:
    raw = dkimkeys.message()
    header = dkim.sign(
        raw,
        b"s1",
        b"shop.test",
        KEY.private_pem,
        include_headers=dkimkeys.SIGNED,
        canonicalize=(b"relaxed", b"relaxed"),
        length=True,
    )
    appended = b"Call now: https://evil.test/pay code 999999\r\n"
    out = await check(checker, header + raw + appended, sender="news@esp.test", ip="127.0.0.3")
    assert out.auth is not None
    [verdict] = out.auth["dkim"]
    assert verdict == {
        "result": "policy",
        "domain": "shop.test",
        "selector": "s1",
        "reason": f"l= leaves {len(appended)} octets of the body unsigned",
    }
    assert out.auth["dmarc"]["result"] == "fail"  # p=reject, and nothing aligned passed
    said = f"dkim=policy (l= leaves {len(appended)} octets of the body unsigned)"
    assert said.encode() in out.received_header
    # The same signature over the body it signed, nothing appended, passes.
    out = await check(checker, header + raw, sender="news@esp.test", ip="127.0.0.3")
    assert out.auth is not None
    assert out.auth["dkim"][0]["result"] == "pass"
    assert out.auth["dmarc"]["result"] == "pass"


async def test_an_encoded_word_for_a_from_domain_is_judged_as_the_domain_it_shows(
    checker: AuthChecker,
) -> None:
    # RFC 2047 5 forbids encoded words in an addr-spec; a lenient reader shows shop.test.
    raw = dkimkeys.message(author="ceo@=?utf-8?q?shop.test?=")
    out = await check(checker, raw, sender="x@evil.test", ip=STRANGER)
    assert out.auth is not None
    dmarc = out.auth["dmarc"]
    assert (dmarc["result"], dmarc["domain"], dmarc["policy"]) == ("fail", "shop.test", "reject")
    assert dmarc["reason"].startswith("From domain written as an encoded word")


def test_an_encoded_from_domain_is_read_in_every_form_a_reader_decodes() -> None:
    for value in (
        "ceo@=?utf-8?q?bank.test?=",
        "Boss <ceo@=?utf-8?q?bank.test?=>",
        "ceo@=?utf-8?b?YmFuay50ZXN0?=",
    ):
        assert (from_domain([value]), encoded_from([value])) == ("bank.test", True), value
    # An encoded word in a display name is allowed (RFC 2047 5 (3)): nothing to flag.
    assert (from_domain(['"=?utf-8?q?x?=" <a@shop.test>']), encoded_from(["x <a@b.test>"])) == (
        "shop.test",
        False,
    )


async def test_a_forged_authentication_results_is_removed(checker: AuthChecker) -> None:
    forged = b"Authentication-Results: MX.test;\r\n\tdkim=pass header.d=bank.test\r\n"
    theirs = b"Authentication-Results: relay.test; spf=pass\r\n"
    raw = signed(extra=forged + theirs)
    out = await check(checker, raw)
    assert out.raw == raw.replace(forged, b"")
    assert theirs in out.raw
    assert out.auth is not None
    assert out.auth["dkim"][0]["result"] == "pass"  # verified on the bytes as received


async def test_a_key_that_never_comes_is_a_temperror_within_the_deadline(dns: DnsServer) -> None:
    checker = await _checker(dns.port, timeout=0.6, dns_timeout=5.0)
    try:
        started = time.monotonic()
        out = await check(checker, signed(selector="slowkey"))
        elapsed = time.monotonic() - started
    finally:
        await checker.close()
    assert out.auth is not None
    assert out.auth["dkim"][0]["result"] == "temperror"
    assert out.auth["dkim"][0]["reason"] == "deadline passed"
    assert out.auth["spf"]["result"] == "pass"
    assert elapsed < 0.6 + 0.3


async def test_a_dead_resolver_gives_temperror_everywhere_within_the_deadline() -> None:
    checker = await _checker(closed_port(), timeout=1.0, dns_timeout=0.3)
    try:
        started = time.monotonic()
        out = await check(checker, signed())
        elapsed = time.monotonic() - started
    finally:
        await checker.close()
    assert out.auth is not None
    assert out.auth["spf"]["result"] == "temperror"
    assert out.auth["helo"]["result"] == "temperror"
    assert out.auth["dkim"][0]["result"] == "temperror"
    assert out.auth["dmarc"]["result"] == "temperror"
    assert elapsed < 1.0 + 0.3


async def test_keys_and_policies_are_cached(checker: AuthChecker, dns: DnsServer) -> None:
    for _ in range(3):
        out = await check(checker, signed())
        assert out.auth is not None and out.auth["dmarc"]["result"] == "pass"
    for name in ("s1._domainkey.shop.test", "_dmarc.shop.test", "shop.test"):
        assert dns.queries.count(name) == 1, name


async def test_a_full_queue_is_a_temperror_not_a_wait(dns: DnsServer) -> None:
    checker = await _checker(dns.port, queue=1)
    try:
        checker.verifier.busy = 1  # as if one verification were running
        out = await check(checker, signed())
    finally:
        checker.verifier.busy = 0
        await checker.close()
    assert out.auth is not None
    assert out.auth["dkim"][0]["result"] == "temperror"
    assert out.auth["dkim"][0]["reason"] == "busy"


# --- what one message may cost the verification workers (RFC 8301) ------------------


def _record(n: int, e: int) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.RSAPublicNumbers(e, n).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def test_keys_outside_rfc_8301_never_reach_a_worker() -> None:
    from receiver.intake.authcheck.signatures import key_outside_bounds

    assert key_outside_bounds(_record((1 << 2047) | 1, 65537)) is None
    assert key_outside_bounds(_record((1 << 4095) | 1, 65537)) is None
    too_long = key_outside_bounds(_record((1 << 8191) | 1, 65537))
    assert too_long == "an RSA key of 8192 bits (RFC 8301: 1024 to 4096)"
    assert key_outside_bounds(_record((1 << 511) | 1, 65537)) is not None  # too short
    huge = key_outside_bounds(_record((1 << 2047) | 1, (1 << 1000) | 1))
    assert huge == "an RSA exponent of 1001 bits"
    assert key_outside_bounds("v=DKIM1; k=ed25519; p=" + "A" * 44) is None
    assert key_outside_bounds("v=DKIM1; p=not base64!") is None  # unusable: dkimpy's call


async def test_many_signatures_over_a_large_body_cost_one_hash_not_eight(
    dns: DnsServer,
) -> None:
    # 8 signatures over a 9 MB body would hold a verification worker for 72 MB of hashing:
    # the first is verified, the rest are not (a temperror that says why, never sent to a
    # worker). The deadline is long here: the one hash may take more than the default 2 s
    # on a loaded host, and that deadline's own temperror is another test's.
    from receiver.intake.authcheck.signatures import HASH_BUDGET

    body = "x" * 998 + "\r\n"
    raw = dkimkeys.message(body=body * (9 * 1024))
    for _ in range(8):
        raw = dkimkeys.sign(raw, "shop.test", "s1", KEY)
    checker = await _checker(dns.port, timeout=60.0)
    try:
        out = await check(checker, raw)
    finally:
        await checker.close()
    assert out.auth is not None
    verdicts = [(d["result"], d["reason"]) for d in out.auth["dkim"]]
    within = HASH_BUDGET // (9 * 1024 * 1000)
    assert [r for r, _ in verdicts[:within]] == ["pass"] * within
    assert verdicts[within:] == [("temperror", "too much to hash in one message")] * (8 - within)
