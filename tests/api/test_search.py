"""Search within a mailbox: the query grammar, its bounds, and the tests on listing fields,
in process (the route, against real processes: tests/api/test_messages.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from api.search import (
    BATCH_BYTES,
    MAX_QUERY,
    MAX_TERMS,
    PAGE,
    SCAN,
    Field,
    Invalid,
    Term,
    Window,
    parse,
    scan,
)
from mailstore.message import MessageDocument

LISTED = {"subject": "Confirm your account", "from": "Shop <noreply@shop.example>", "to": "me"}


def test_field_terms_quoted_values_and_free_words() -> None:
    search = parse('from:shop SUBJECT:"your account" welcome "two words" https://x.example/')
    assert search.terms == (
        Term(Field.FROM, "shop"),
        Term(Field.SUBJECT, "your account"),
        Term(Field.ANY, "welcome"),
        Term(Field.ANY, "two words"),
        Term(Field.ANY, "https://x.example/"),  # not a field: a URL is one word
    )


def test_field_terms_decide_on_the_listing_and_free_words_fall_to_the_text() -> None:
    assert parse('from:SHOP subject:"confirm your"').headers_match(LISTED)
    assert not parse("from:bank").headers_match(LISTED)
    assert not parse("to:other").headers_match(LISTED)
    search = parse("account noreply 482913")
    assert search.headers_match(LISTED)  # free words are not decided here
    assert search.words_left(LISTED) == ["482913"]  # the text must hold it


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        ('subject:"open', "is not closed"),
        ("from: shop", "from: needs a value"),
        ("   ", "no term"),
        (" ".join(["w"] * (MAX_TERMS + 1)), f"at most {MAX_TERMS} terms"),
        ("x" * (MAX_QUERY + 1), f"at most {MAX_QUERY} characters"),
    ],
)
def test_a_query_outside_the_grammar_or_its_bounds_is_refused_saying_why(
    q: str, reason: str
) -> None:
    with pytest.raises(Invalid, match=reason):
        parse(q)


class PagedStore:
    """A mailbox in memory, read as the store reads it: newest first, pages before a
    cursor; whole messages by id. Records what each read asked for."""

    def __init__(self, messages: list[MessageDocument]) -> None:
        self.messages = sorted(messages, key=lambda m: m.id, reverse=True)
        self.pages: list[int] = []
        self.fetched: list[int] = []

    async def list_mailbox(
        self, mailbox: str, limit: int, *, before: str | None = None, **_: Any
    ) -> list[MessageDocument]:
        page = [m for m in self.messages if before is None or m.id < before][:limit]
        self.pages.append(len(page))
        return [dataclasses.replace(m, raw=b"", size=m.size) for m in page]

    async def get_many(self, ids: list[str]) -> list[MessageDocument]:
        self.fetched.append(len(ids))
        return [m for m in self.messages if m.id in ids]


def _message(n: int, subject: str, body: bytes) -> MessageDocument:
    raw = b"Subject: " + subject.encode() + b"\r\n\r\n" + body
    return MessageDocument(
        id=f"{n:026d}", raw=raw, mail_from="", rcpt=("box@mx.test",), peer_ip="", helo="",
        received_at=datetime.now(UTC), headers={"subject": subject},
    )  # fmt: skip


def _listed(message: MessageDocument) -> dict[str, Any]:
    return {"id": message.id, "subject": message.headers["subject"], "from": "x", "to": ""}


async def _texts(items: list[tuple[MessageDocument, list[str]]]) -> list[bool]:
    return [all(w.encode() in m.raw for w in words) for m, words in items]


async def test_a_search_stops_at_its_scan_bound_and_says_where_to_go_on() -> None:
    store = PagedStore([_message(n, "news", b"x") for n in range(SCAN + 150)])
    answer = await scan(store, parse("subject:invoice"), Window("box@mx.test", 50), _listed, _texts)  # type: ignore[arg-type]
    assert answer["messages"] == [] and sum(store.pages) <= SCAN + PAGE
    assert answer["next"] == f"{150:026d}"  # the last examined: the 1,000th newest
    assert store.fetched == []  # field terms never read a message


async def test_free_words_read_the_texts_in_batches_never_a_page_at_once() -> None:
    big = b"y" * (BATCH_BYTES // 3)
    messages = [_message(n, "news", big + (b" needle" if n == 3 else b"")) for n in range(9)]
    store = PagedStore(messages)
    answer = await scan(store, parse("needle"), Window("box@mx.test", 50), _listed, _texts)  # type: ignore[arg-type]
    assert [m["id"] for m in answer["messages"]] == [f"{3:026d}"] and "next" not in answer
    assert max(store.fetched) <= 3 and sum(store.fetched) == 9
