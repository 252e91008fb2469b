"""The DATA reader: end marker, transparency, limits and bare line ends, fed in pieces."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.smtp.body import BareNewline, BodyReader, MemoryBudget, Outcome, unstuff
from tests.support.smuggling import MALFORMED_ENDINGS

LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def feed_in_pieces(reader: BodyReader, wire: bytes, cuts: list[int]) -> tuple[int, bytes]:
    """Feed `wire` split at `cuts`; return (bytes the body used, the bytes after it)."""
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    consumed = 0
    for start, end in itertools.pairwise(points):
        used = reader.feed(wire[start:end])
        if used >= 0:
            consumed = start + used
            return consumed, wire[consumed:]
        if reader.refused:
            return -1, b""
    return -1, b""


def reader(limit: int = 10**6, mode: BareNewline = BareNewline.REJECT) -> BodyReader:
    return BodyReader(limit, MemoryBudget(10**7), mode)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=12), st.lists(st.integers(0, 600), max_size=8))
def test_body_round_trips_whatever_the_splits_and_leaves_the_next_command(
    lines: list[bytes], cuts: list[int]
) -> None:
    body = reader(mode=BareNewline.ACCEPT)  # lines may hold NULs: transparency only here
    wire = stuff(lines) + b".\r\nQUIT\r\n"
    used, rest = feed_in_pieces(body, wire, cuts)
    assert used >= 0 and rest == b"QUIT\r\n"
    result = body.finish()
    assert result.outcome is Outcome.KEPT
    assert result.content == b"".join(line + b"\r\n" for line in lines)


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"x" * 5000 + b"\r\n.\r\n", b"x" * 5000 + b"\r\n"),
    ],
)
def test_edge_cases(wire: bytes, content: bytes) -> None:
    body = reader()
    assert body.feed(wire) == len(wire)
    assert body.finish().content == content


@pytest.mark.parametrize("ending", MALFORMED_ENDINGS)
def test_no_malformed_ending_ends_data_and_reject_mode_refuses_it(ending: bytes) -> None:
    body = reader(mode=BareNewline.REJECT)
    smuggled = b"Subject: a\r\n\r\nx" + ending + b"MAIL FROM:<e@vil>\r\n"
    used = body.feed(smuggled)
    assert used == -1 and body.refused  # refused at once, before the real end arrives
    assert body.finish().outcome is Outcome.BARE_NEWLINE


@pytest.mark.parametrize("ending", MALFORMED_ENDINGS)
def test_normalize_mode_stores_only_crlf_line_ends(ending: bytes) -> None:
    body = reader(mode=BareNewline.NORMALIZE)
    wire = b"Subject: a\r\n\r\nx" + ending + b"MAIL FROM:<e@vil>\r\n.\r\n"
    assert body.feed(wire) == len(wire)  # only the real CRLF.CRLF ended it
    content = body.finish().content
    assert b"\x00" not in content
    assert content.count(b"\n") == content.count(b"\r\n") == content.count(b"\r")
    assert content.endswith(b"MAIL FROM:<e@vil>\r\n")


def test_accept_mode_keeps_the_bytes_as_sent() -> None:
    body = reader(mode=BareNewline.ACCEPT)
    wire = b"a\nb\rc\x00\r\n.\r\n"
    assert body.feed(wire) == len(wire)
    assert body.finish().content == b"a\nb\rc\x00\r\n"


def naive_bare(content: bytes) -> bool:
    """A bare CR, bare LF or NUL anywhere: the obvious, slow way."""
    stripped = content.replace(b"\r\n", b"")
    return b"\r" in stripped or b"\n" in stripped or b"\x00" in content


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\x00", b"xy"]), max_size=30),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_bare_detection_agrees_with_a_naive_check_whatever_the_splits(
    pieces: list[bytes], cuts: list[int]
) -> None:
    content = b"".join(pieces)
    if b"\r\n.\r\n" in b"\r\n" + content + b"\r\n":
        return  # that would end DATA early; the round-trip test covers ends
    wire = content + b"\r\n.\r\n"
    body = reader(mode=BareNewline.REJECT)
    used, _ = feed_in_pieces(body, wire, cuts)
    assert body.refused == naive_bare(content + b"\r\n")
    if not body.refused:
        assert used == len(wire)


def test_over_the_limit_is_drained_and_flagged_not_kept() -> None:
    body = reader(limit=1000)
    wire = b"y" * 10_000 + b"\r\n.\r\nNOOP\r\n"
    assert body.feed(wire) == len(wire) - len(b"NOOP\r\n")
    result = body.finish()
    assert result.outcome is Outcome.TOO_BIG and result.content == b""


def test_normalizing_cannot_grow_a_message_past_the_limit() -> None:
    body = BodyReader(1000, MemoryBudget(10**6), BareNewline.NORMALIZE)
    wire = b"\n" * 900 + b"\r\n.\r\n"
    assert body.feed(wire) == len(wire)
    assert body.finish().outcome is Outcome.TOO_BIG  # 900 LFs would be 1,800 bytes


def test_unstuff_removes_only_the_first_dot() -> None:
    assert unstuff(b"..a\r\n...\r\nb.\r\n") == b".a\r\n..\r\nb.\r\n"


def test_shared_budget_caps_all_sessions_and_is_given_back() -> None:
    budget = MemoryBudget(1500)
    first = BodyReader(10_000, budget, BareNewline.REJECT)
    second = BodyReader(10_000, budget, BareNewline.REJECT)
    first.feed(b"a" * 1000 + b"\r\n.\r\n")
    second.feed(b"b" * 1000 + b"\r\n.\r\n")
    kept, refused = first.finish(), second.finish()
    assert kept.reserved == 1002 and kept.outcome is Outcome.KEPT
    assert refused.outcome is Outcome.NO_MEMORY and refused.reserved == 0
    assert budget.used == 1002  # the refused body gave back what it had taken
    budget.give(kept.reserved)
    assert budget.used == 0


def test_dropping_a_half_read_body_gives_its_memory_back() -> None:
    budget = MemoryBudget(10_000)
    body = BodyReader(10_000, budget, BareNewline.REJECT)
    body.feed(b"c" * 3000)
    assert budget.used > 0
    body.drop()
    assert budget.used == 0
