"""The DATA reader: end marker, transparency and size limit, against an asyncio reader."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.data import read_body, unstuff

LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


async def read(
    wire: bytes, limit: int = 10**6, buffer_limit: int = 64
) -> tuple[bytes, bool, bytes]:
    reader = asyncio.StreamReader(limit=buffer_limit)
    reader.feed_data(wire)
    reader.feed_eof()
    body = await read_body(reader, limit, lambda n: None)
    return body.content, body.too_big, await reader.read()


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=12), st.sampled_from([5, 6, 7, 16, 1024]))
def test_body_round_trips_and_leaves_the_next_command(lines: list[bytes], buffer: int) -> None:
    wire = stuff(lines) + b".\r\nQUIT\r\n"
    content, too_big, rest = asyncio.run(read(wire, buffer_limit=buffer))
    assert content == b"".join(line + b"\r\n" for line in lines)
    assert not too_big and rest == b"QUIT\r\n"


@pytest.mark.parametrize(
    "wire, body",
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"x" * 5000 + b"\r\n.\r\n", b"x" * 5000 + b"\r\n"),
    ],
)
async def test_edge_cases(wire: bytes, body: bytes) -> None:
    content, too_big, rest = await read(wire)
    assert (content, too_big, rest) == (body, False, b"")


async def test_over_the_limit_is_drained_and_flagged_not_kept() -> None:
    content, too_big, rest = await read(b"y" * 10_000 + b"\r\n.\r\nNOOP\r\n", limit=1000)
    assert too_big and content == b"" and rest == b"NOOP\r\n"


def test_unstuff_removes_only_the_first_dot() -> None:
    assert unstuff(b"..a\r\n...\r\nb.\r\n") == b".a\r\n..\r\nb.\r\n"
