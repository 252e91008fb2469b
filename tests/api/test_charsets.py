"""Text from hostile bytes: only real MIME charsets, RFC 2047 words, valid UTF-8 always."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.charsets import (
    clean,
    decode,
    decode_phrases,
    decode_words,
    header_text,
    known_charset,
)


@pytest.mark.parametrize(
    "label",
    ["punycode", "unicode_escape", "raw_unicode_escape", "idna", "zlib_codec", "rot13",
     "base64_codec", "hex", "bz2", "uu", "mbcs", "x-unknown", "", "a" * 100],
)  # fmt: skip
def test_python_codecs_that_are_no_mime_charset_are_refused(label: str) -> None:
    assert known_charset(label) is None


@pytest.mark.parametrize(
    ("label", "codec"),
    [("UTF-8", "utf-8"), ("us-ascii", "ascii"), ("ISO-8859-1", "iso8859-1"),
     ("latin1", "iso8859-1"), ("windows-1252", "cp1252"), ("Shift_JIS", "shift_jis"),
     ("koi8-r", "koi8-r"), ("gb2312", "gb2312"), ('"utf-8"', "utf-8")],
)  # fmt: skip
def test_real_charsets_and_their_aliases_are_known(label: str, codec: str) -> None:
    assert known_charset(label) == codec


def test_a_quadratic_codec_is_never_used_on_a_body() -> None:
    body = b"a" * 200_000 + b"-" + b"\xff" * 10
    started = time.thread_time()  # CPU, not the wall: a loaded host's waits are not its cost
    text = decode(body, "punycode")
    assert time.thread_time() - started < 0.1
    assert text.startswith("aaa") and text.endswith("\ufffd" * 10)


def test_eight_bit_header_bytes_are_read_as_utf8() -> None:
    escaped = "J\udcc3\udcb6rg <j\udcc3\udcb6rg@b\udcc3\udcbccher.example>"
    assert clean(escaped) == "Jörg <jörg@bücher.example>"
    assert clean("lone \ud800 and \udcff") == "lone \ufffd and \ufffd"


def test_encoded_words_decode_and_adjacent_ones_join() -> None:
    value = "=?utf-8?q?caf=C3=A9?= =?ISO-8859-1?B?ZOk=?=\r\n =?utf-8?q?_x?= plain =?x?q?y?="
    assert decode_words(value) == "cafédé x plain y"  # RFC 2047 6.2: no space between
    assert decode_words("=?punycode?q?abc-?=") == "abc-"  # read as UTF-8, not punycode
    assert decode_words("=?utf-8*en?q?hi?=") == "hi"  # RFC 2231 language tag


def test_six_thousand_folded_encoded_words_decode_in_linear_time() -> None:
    value = "\r\n ".join(["=?utf-8?q?a?="] * 6_000)
    started = time.thread_time()
    assert decode_words(value) == "a" * 6_000
    assert time.thread_time() - started < 0.2


@given(st.text(), st.sampled_from(["utf-8", "punycode", "utf-16", "shift_jis", None]))
def test_any_input_decodes_to_valid_utf8(text: str, charset: str | None) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    decode(raw, charset).encode("utf-8")
    decode_words(text).encode("utf-8")


def test_encoded_words_are_never_decoded_in_structured_fields() -> None:
    forged = "=?utf-8?q?mx=2Etest?=; dmarc=pass"
    assert header_text("Authentication-Results", forged) == forged
    for name in ("Received", "DKIM-Signature", "ARC-Seal", "Message-ID", "References"):
        assert header_text(name, "=?utf-8?q?x?=") == "=?utf-8?q?x?="
    # Unstructured text is decoded as before (RFC 2047 5 (1)).
    assert header_text("Subject", "=?utf-8?q?caf=C3=A9?=") == "café"
    assert header_text("X-Note", "=?utf-8?q?caf=C3=A9?=") == "café"


def test_an_address_field_decodes_its_display_names_and_never_an_addr_spec() -> None:
    assert decode_phrases("ceo@=?utf-8?q?bank.test?=") == "ceo@=?utf-8?q?bank.test?="
    assert (
        decode_phrases("=?utf-8?q?Jos=C3=A9?= =?utf-8?q?_Lee?= <=?utf-8?q?a?=@b.test>")
        == "José Lee <=?utf-8?q?a?=@b.test>"
    )
    assert decode_phrases("Boss < ceo@=?utf-8?q?bank.test?= >") == (
        "Boss < ceo@=?utf-8?q?bank.test?= >"
    )
    assert header_text("From", "ceo@=?utf-8?q?bank.test?=") == "ceo@=?utf-8?q?bank.test?="
