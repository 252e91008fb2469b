"""Our Authentication-Results header and the removal of forged ones (RFC 8601)."""

from __future__ import annotations

import re

from receiver.intake.authcheck.authserv import MAX_SCAN, MAX_STEPS, claimed_id, claims
from receiver.intake.authcheck.dmarc import DkimResult, DmarcResult
from receiver.intake.authcheck.results import (
    MAX_READ,
    Verdicts,
    authentication_results,
    strip_forged,
)
from receiver.intake.authcheck.spf import SpfResult

BODY = b"\r\nAuthentication-Results: mx.test; dkim=pass\r\nin the body: kept\r\n"


def test_only_fields_claiming_our_id_leave_the_header_section() -> None:
    raw = (
        b"Received: from relay\r\n"
        b"authentication-results:   (comment) MX.TEST 1;\r\n  spf=pass\r\n\tdkim=pass\r\n"
        b"Authentication-Results: mx.test.evil; spf=pass\r\n"
        b"Authentication-Results: other.test; spf=pass smtp.mailfrom=mx.test\r\n"
        b"Subject: hi\r\n" + BODY
    )
    assert strip_forged(raw, "mx.test") == (
        b"Received: from relay\r\n"
        b"Authentication-Results: mx.test.evil; spf=pass\r\n"
        b"Authentication-Results: other.test; spf=pass smtp.mailfrom=mx.test\r\n"
        b"Subject: hi\r\n" + BODY
    )


def test_a_message_without_one_is_returned_as_is() -> None:
    raw = b"Subject: hi\r\n" + BODY
    assert strip_forged(raw, "mx.test") is raw


def test_the_header_is_folded_and_carries_nothing_a_sender_injected() -> None:
    verdicts = Verdicts(
        spf=SpfResult("fail", "shop.test", "matched -all); dkim=pass (x"),
        helo=SpfResult("none", "helo\r\nX-Evil: 1", ""),
        dkim=[DkimResult("pass", "shop.test", "s1\r\nX: y")],
        dmarc=DmarcResult("fail", "shop.test", "reject", False, True, "why"),
        arc=("none", ""),
    )
    header = authentication_results("mx.test", verdicts, "a;b@shop.test")
    lines = header.split(b"\r\n")
    assert lines[0] == b"Authentication-Results: mx.test;"
    assert all(line.startswith(b"\t") for line in lines[1:-1]) and lines[-1] == b""
    text = header.decode()
    assert "X-Evil" not in text.replace("helo__X-Evil", "")
    # A reason cannot close its comment or start a method: one ';' per method, and
    # parentheses only around our comments.
    assert text.count(";") == 5
    assert re.findall(r"\(([^()]*)\)", text) == [
        "matched -all dkim=pass x",
        "p=reject why",
    ]
    assert text.count("(") == 2
    assert "smtp.mailfrom=a_b@shop.test" in text
    assert "dmarc=fail (p=reject why) header.from=shop.test" in text
    assert re.findall(r"\t(\w+)=(\w+)", text) == [
        ("spf", "fail"),
        ("spf", "none"),
        ("dkim", "pass"),
        ("dmarc", "fail"),
        ("arc", "none"),
    ]


# Thirteen spellings of a forged field naming our authserv-id, each as a consumer reads it
# (RFC 8601 2.2: a `value` after CFWS; RFC 5322 3.2.2 comments nest).
FORGED = {
    "plain": b"Authentication-Results: mx.test; dmarc=pass",
    "case": b"AUTHENTICATION-RESULTS: MX.Test; dmarc=pass",
    "trailing dot": b"Authentication-Results: mx.test.; dmarc=pass",
    "leading CFWS": b"Authentication-Results: \t  \r\n   mx.test; dmarc=pass",
    "comment before": b"Authentication-Results: (trusted) mx.test; dmarc=pass",
    "comment after": b"Authentication-Results: mx.test(trusted); dmarc=pass",
    "nested comment": b"Authentication-Results: (a (b) c) mx.test; dmarc=pass",
    "quoted string": b'Authentication-Results: "mx.test"; dmarc=pass',
    "quoted-pair": b'Authentication-Results: "mx\\.t\\est"; dmarc=pass',
    "encoded word": b"Authentication-Results: =?utf-8?q?mx=2Etest?=; dmarc=pass",
    "folded": b"Authentication-Results:\r\n mx.test;\r\n dmarc=pass",
    "version": b"Authentication-Results: mx.test 1; dmarc=pass",
    "tab": b"Authentication-Results:\tmx.test\t;dmarc=pass",
}


def test_every_spelling_of_our_authserv_id_is_removed_and_others_are_kept() -> None:
    kept = (
        b"Authentication-Results: other.test; dmarc=pass\r\n"
        b"Authentication-Results: mx.test.evil; dmarc=pass\r\n"
        b'Authentication-Results: (mx.test) "other.test"; dmarc=pass\r\n'
    )
    for spelling, field in FORGED.items():
        raw = b"Received: from relay\r\n" + field + b"\r\n" + kept + b"Subject: hi\r\n" + BODY
        stripped = strip_forged(raw, "mx.test")
        assert stripped == b"Received: from relay\r\n" + kept + b"Subject: hi\r\n" + BODY, spelling


def test_the_id_is_read_through_comments_quotes_and_encoded_words() -> None:
    assert claimed_id(' (x) "Mx.Test."; spf=pass') == "mx.test"
    assert claimed_id("=?us-ascii?b?bXgudGVzdA==?= ; spf=pass") == "mx.test"
    assert claimed_id(" (unclosed comment mx.test") is None
    assert claimed_id(" ;") is None
    # Past the bounds (nesting, delimiters, length) a field is unreadable: treated as ours,
    # since a reader without bounds might find our id where the scan stopped.
    assert claims(" " + "(" * 40 + "mx.test" + ")" * 40 + " other.test;", "mx.test")
    assert claims(" " + "()" * (MAX_STEPS + 1) + " mx.test;", "mx.test")
    assert claims(" (" + "x" * MAX_SCAN + ") mx.test; dmarc=pass", "mx.test")
    assert not claims(" (" + "x" * 100 + ") other.test; spf=pass (mx.test)", "mx.test")
    assert not claims(" " + "(" * 40 + ")" * 40 + " other.test;", "mx.test")


def test_past_the_fields_read_in_full_a_field_naming_our_id_is_removed_unread() -> None:
    theirs = b"Authentication-Results: other.test; spf=pass (mx.test)\r\n"
    plain = b"Authentication-Results: other.test; spf=pass\r\n"
    raw = theirs * MAX_READ + plain + theirs + b"Subject: hi\r\n" + BODY
    # Fields that cannot name ours are never counted, nor removed.
    assert strip_forged(raw, "mx.test") == theirs * MAX_READ + plain + b"Subject: hi\r\n" + BODY
