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


async def test_shared_budget_caps_all_sessions_and_is_given_back() -> None:
    from receiver.data import MemoryBudget

    budget = MemoryBudget(1500)
    first = asyncio.StreamReader(limit=64)
    first.feed_data(b"a" * 1000 + b"\r\n.\r\n")
    second = asyncio.StreamReader(limit=64)
    second.feed_data(b"b" * 1000 + b"\r\n.\r\n")
    kept = await read_body(first, 10_000, lambda n: None, budget)
    refused = await read_body(second, 10_000, lambda n: None, budget)
    assert kept.reserved == 1002 and not kept.no_memory
    assert refused.no_memory and refused.content == b"" and refused.reserved == 0
    assert budget.used == 1002  # the refused body gave back what it had taken
    budget.give(kept.reserved)
    assert budget.used == 0


async def test_client_vanishing_mid_data_gives_its_memory_back() -> None:
    from receiver.data import MemoryBudget

    budget = MemoryBudget(10_000)
    reader = asyncio.StreamReader(limit=64)
    reader.feed_data(b"c" * 3000)
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await read_body(reader, 10_000, lambda n: None, budget)
    assert budget.used == 0
