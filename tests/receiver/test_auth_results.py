"""Our Authentication-Results header and the removal of forged ones (RFC 8601)."""

from __future__ import annotations

import re

from receiver.intake.authcheck.dmarc import DkimResult, DmarcResult
from receiver.intake.authcheck.results import Verdicts, authentication_results, strip_forged
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
