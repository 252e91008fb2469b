"""The envelope grammar shared by the receiver and the API."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstore.addresses import NULL_SENDER, AddressError, canonical_mailbox, parse_path


def parsed(text: str, *, utf8: bool = False) -> tuple[str, str]:
    address, params = parse_path(text, utf8=utf8)
    return address.mailbox, params


@pytest.mark.parametrize(
    ("text", "mailbox", "params"),
    [
        ("<Ann.Lee+tag@Example.ORG>", "ann.lee+tag@example.org", ""),
        ("<u@mx.test.>", "u@mx.test", ""),  # the root dot is not another mailbox
        ("<u@mx.test> SIZE=10 BODY=8BITMIME", "u@mx.test", "SIZE=10 BODY=8BITMIME"),
        (" <u@mx.test>", "u@mx.test", ""),  # a space after the colon, as many clients send
        ("u@mx.test SIZE=1", "u@mx.test", "SIZE=1"),  # no brackets: tolerated, as Postfix
        ('<"abc"@mx.test>', "abc@mx.test", ""),  # RFC 5321 4.1.2: the same mailbox
        ('<"a\\bc"@mx.test>', "abc@mx.test", ""),  # a quoted-pair that needs no quoting
        ("<@relay.example,@other.example:u@mx.test>", "u@mx.test", ""),  # route ignored
        ("<u@[192.0.2.1]>", "u@[192.0.2.1]", ""),
        ("<u@[IPv6:2001:DB8::1]>", "u@[ipv6:2001:db8::1]", ""),
        ("<Postmaster>", "postmaster", ""),  # RFC 5321 4.5.1, no domain needed
    ],
)
def test_valid_paths_are_canonical(text: str, mailbox: str, params: str) -> None:
    assert parsed(text) == (mailbox, params)


def test_null_sender() -> None:
    assert parse_path("<> SIZE=5", utf8=False) == (NULL_SENDER, "SIZE=5")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("<", "syntax"),
        ("<a@[", "syntax"),
        ("<a@[1.2.3.999]>", "syntax"),
        ("<a@b>x", "syntax"),
        ("<a b@c>", "syntax"),
        ("<@c>", "syntax"),
        ("<a@>", "syntax"),
        ("<a@-b.c>", "syntax"),
        ("<a..b@c>", "syntax"),
        ("<a@b..c>", "syntax"),
        ('<"a\rX-Injected: yes"@mx.test>', "syntax"),  # control characters, anywhere
        ("<a\x00@mx.test>", "syntax"),
        ('<"a@b"@mx.test>', "mailbox"),  # needs its quotes: no mailbox of ours
        ('<"a b"@mx.test>', "mailbox"),
        ("<" + "a" * 65 + "@mx.test>", "mailbox"),
        ("<a@" + ("b" * 60 + ".") * 5 + "test>", "mailbox"),
        ("<ü@mx.test>", "utf8"),  # non-ASCII without SMTPUTF8
    ],
)
def test_invalid_paths_are_refused_with_their_kind(text: str, kind: str) -> None:
    with pytest.raises(AddressError) as refused:
        parse_path(text, utf8=False)
    assert refused.value.kind == kind


def test_utf8_mailboxes_need_smtputf8_and_are_flagged() -> None:
    address, _ = parse_path("<Jürgen@Bücher.example>", utf8=True)
    assert address.mailbox == "jürgen@bücher.example" and address.utf8
    assert not parse_path("<plain@mx.test>", utf8=True)[0].utf8


def test_canonical_mailbox_for_api_paths() -> None:
    assert canonical_mailbox("Box@MX.test.") == "box@mx.test"
    assert canonical_mailbox('"box"@mx.test') == "box@mx.test"
    for invalid in ("postmaster", "a b@c", "a@b@c", "", "@mx.test", '"a b"@mx.test'):
        assert canonical_mailbox(invalid) is None


ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+-_", min_size=1, max_size=10)
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(st.lists(ATOM, min_size=1, max_size=3), st.lists(LABEL, min_size=1, max_size=3))
def test_any_plain_address_round_trips_and_is_stable(locals_: list[str], labels: list[str]) -> None:
    labels = [label.strip("-") or "x" for label in labels]
    text = ".".join(locals_) + "@" + ".".join(labels)
    mailbox, _ = parsed(f"<{text.upper()}>")
    assert mailbox == text.lower()
    assert canonical_mailbox(mailbox) == mailbox  # canonical is a fixed point


PATH_TEXT = st.lists(
    st.sampled_from([*'aZ09.-_+@<>"\\ []:,=ü\x00\r', "IPv6:", "postmaster", "1.2.3.4"]),
    max_size=20,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(PATH_TEXT, st.booleans())
def test_the_fast_path_agrees_with_the_general_grammar(text: str, utf8: bool) -> None:
    from mailstore.addresses import _parse_path

    def outcome(parse: object) -> object:
        try:
            return parse(text, utf8=utf8)  # type: ignore[operator]
        except AddressError as error:
            return error.kind

    for candidate in (text, f"<{text}>", f"<{text}@mx.test> SIZE=1"):
        text = candidate
        assert outcome(parse_path) == outcome(_parse_path), text
