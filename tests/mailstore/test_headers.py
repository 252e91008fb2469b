"""The receiver's header scan: what it keeps, and where it stops."""

from __future__ import annotations

import email.parser
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstore.headers import MAX_HEADER_VALUE, scan_headers


def test_selected_fields_are_kept_undecoded_and_unfolded() -> None:
    raw = (
        b"Received: from a\r\n\tby b\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n and more\r\n"
        b"From: Ann <ann@example.org>\r\n"
        b"To: box@mx.test\r\n"
        b"Message-ID: <1@example.org>\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        b"\r\n"
        b"Subject: not a header, the body\r\n"
    )
    scan = scan_headers(raw)
    assert not scan.refused and scan.fields == 6
    assert scan.values == {
        "subject": "=?utf-8?q?caf=C3=A9?= and more",
        "from": "Ann <ann@example.org>",
        "to": "box@mx.test",
        "message_id": "<1@example.org>",
        "date": "Tue, 24 Nov 2026 10:00:00 +0000",
    }


def test_first_occurrence_wins_and_controls_are_dropped() -> None:
    scan = scan_headers(b"subject: one\x00\x1b[31m\r\nSubject: two\r\n\r\n")
    assert scan.values == {"subject": "one[31m"}


def test_body_without_header_section_has_no_fields() -> None:
    for raw in (b"", b"Hi\r\n", b"no colon here\r\nSubject: x\r\n", b"\r\nSubject: x\r\n"):
        scan = scan_headers(raw)
        assert (scan.fields, scan.values, scan.refused) == (0, {}, False)


def test_long_values_are_cut_for_listings() -> None:
    scan = scan_headers(b"Subject: " + b"x" * 5000 + b"\r\n\r\n")
    assert scan.values["subject"] == "x" * MAX_HEADER_VALUE


def test_a_field_folded_past_the_byte_cap_is_refused() -> None:
    folded = b"Subject: start\r\n" + b" x\r\n" * 160_000 + b"\r\nbody\r\n"
    scan = scan_headers(folded, max_bytes=256 * 1024)
    assert scan.too_big and not scan.too_many


def test_a_header_section_past_the_byte_cap_is_refused_even_without_a_body() -> None:
    assert scan_headers(b"X-A: " + b"a" * 300_000).too_big
    assert not scan_headers(b"X-A: " + b"a" * 1000).too_big


def test_too_many_fields_are_refused() -> None:
    raw = b"".join(b"X-N: %d\r\n" % n for n in range(1001)) + b"\r\n"
    assert scan_headers(raw, max_fields=1000).too_many
    assert not scan_headers(raw[: raw.index(b"X-N: 1000")] + b"\r\n").refused


NAMES = st.sampled_from(["Subject", "From", "To", "Date", "Message-ID", "X-Other", "to"])
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, st.lists(VALUE, min_size=1, max_size=3)), max_size=8))
def test_scan_agrees_with_the_stdlib_parser_on_well_formed_headers(
    fields: list[tuple[str, list[str]]],
) -> None:
    raw = b"".join((name + ": " + "\r\n ".join(words) + "\r\n").encode() for name, words in fields)
    raw += b"\r\nbody\r\n"
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    expected = {}
    for name in ("subject", "from", "to", "date", "message-id"):
        value = parsed.get(name)
        if value is not None:
            expected[name.replace("-", "_")] = " ".join(str(value).replace("\r\n", "").split())
    found = {k: " ".join(v.split()) for k, v in scan_headers(raw).values.items()}
    assert found == expected
