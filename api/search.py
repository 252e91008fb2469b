"""Search within a mailbox (`?q=` on its listing): the query's grammar and the tests on a
message's listing fields, in process; the text of a message is searched in a render
worker (`api.renderworker`'s `search` job), under the render bounds.

    q      = term *( 1*SP term )
    term   = [ field ":" ] ( word / quoted )
    field  = "from" / "to" / "subject"          ; any case
    quoted = DQUOTE *( any character but DQUOTE ) DQUOTE

A term with a field must be found (case-insensitively, as a substring) in that listing
field; a free word or quoted phrase in the subject, the From or the text (the text part,
or the visible text of the HTML part). Every term must hold. `name:value` with another
name is a free word (a URL's `https:` is no field). The parser reads each character once
and keeps at most `MAX_TERMS` terms of a query of at most `MAX_QUERY` characters: beyond
either, or with a quote left open, `Invalid` (the API's 422).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from api.links import body_contains
from mailstore.message import MessageDocument

if TYPE_CHECKING:
    from mailstore import MessageStore

Summarize = Callable[[MessageDocument], dict[str, Any]]
# For each (message, words): whether its text holds every one of its words (read in a
# render worker, a batch a job).
TextsHold = Callable[[list[tuple[MessageDocument, list[str]]]], Awaitable[list[bool]]]

__all__ = [
    "MAX_QUERY",
    "MAX_TERMS",
    "PAGE",
    "SCAN",
    "SCAN_BYTES",
    "Field",
    "Invalid",
    "Search",
    "Term",
    "Window",
    "job",
    "parse",
    "scan",
]

MAX_QUERY = 500  # characters of q
MAX_TERMS = 10
# What one search call may examine: more messages than a mailbox holds at the default cap
# (FLOODGATE_MAILBOX_MAX_MESSAGES, 500, trimmed at 10 % more), and message bytes read for
# their text; past either the answer stops with a `next` cursor.
SCAN = 1_000
SCAN_BYTES = 32 * 1024 * 1024
PAGE = 100  # messages a store read brings (listing fields only)
BATCH_BYTES = 512 * 1024  # messages searched in one render job (one larger goes alone)


class Field(StrEnum):
    FROM = "from"
    TO = "to"
    SUBJECT = "subject"
    ANY = "any"  # a free word: subject, From or text


class Invalid(ValueError):
    """A query the grammar refuses, saying why."""


@dataclass(frozen=True, slots=True)
class Term:
    field: Field
    value: str


@dataclass(frozen=True, slots=True)
class Search:
    """A parsed query: every term must hold."""

    terms: tuple[Term, ...]

    def headers_match(self, listed: dict[str, Any]) -> bool:
        """Whether the field terms hold on a listing entry (free words are not decided
        here: see `words_left`)."""
        return all(
            body_contains(term.value, str(listed[term.field.value]))
            for term in self.terms
            if term.field is not Field.ANY
        )

    def words_left(self, listed: dict[str, Any]) -> list[str]:
        """The free words found neither in the subject nor in the From: the text must
        hold each of them."""
        fields = (str(listed["subject"]), str(listed["from"]))
        return [
            term.value
            for term in self.terms
            if term.field is Field.ANY and not body_contains(term.value, *fields)
        ]


def parse(q: str) -> Search:
    """`q` as terms (see the module docstring); `Invalid` saying why not."""
    if len(q) > MAX_QUERY:
        raise Invalid(f"q: at most {MAX_QUERY} characters")
    terms: list[Term] = []
    position, end = 0, len(q)
    while position < end:
        if q[position].isspace():
            position += 1
            continue
        term, position = _term(q, position)
        if term.value.strip():
            terms.append(term)
        if len(terms) > MAX_TERMS:
            raise Invalid(f"q: at most {MAX_TERMS} terms")
    if not terms:
        raise Invalid("q: no term to search for")
    return Search(tuple(terms))


def _term(q: str, start: int) -> tuple[Term, int]:
    """The term at `start` and the position after it. Each character is looked at once:
    the field name is at most the characters before the first ':' of a word."""
    field = Field.ANY
    position = start
    if q[position] != '"':
        colon = position
        while colon < len(q) and not q[colon].isspace() and q[colon] not in ':"':
            colon += 1
        name = q[position:colon].lower()
        if colon < len(q) and q[colon] == ":" and name in (Field.FROM, Field.TO, Field.SUBJECT):
            field, position = Field(name), colon + 1
    if position < len(q) and q[position] == '"':
        close = q.find('"', position + 1)
        if close < 0:
            raise Invalid(f"q: a quote opened at character {position + 1} is not closed")
        return Term(field, q[position + 1 : close]), close + 1
    stop = position
    while stop < len(q) and not q[stop].isspace():
        stop += 1
    if field is not Field.ANY and stop == position:
        raise Invalid(f"q: {field.value}: needs a value")
    return Term(field, q[position:stop] if field is not Field.ANY else q[start:stop]), stop


@dataclass(frozen=True, slots=True)
class Window:
    """A listing's mailbox, page size and cursors."""

    mailbox: str
    limit: int
    before: str | None = None
    after: str | None = None
    since: datetime | None = None


# An examined message: its listing entry, and the free words its text must hold (None:
# its listing fields already refused it).
Examined = tuple[MessageDocument, dict[str, Any], list[str] | None]


async def scan(
    store: MessageStore,
    search: Search,
    window: Window,
    summarize: Summarize,
    texts_hold: TextsHold,
) -> dict[str, Any]:
    """The listing of the newest `window.limit` messages of the window that match, newest
    first. Bounded: pages of `PAGE` on the mailbox's key range, at most `SCAN` messages
    examined and `SCAN_BYTES` of messages read for their text; stopped by either before
    the window's end, `next` is the `before` cursor to go on from."""
    found: list[dict[str, Any]] = []
    scanned, read, before = 0, 0, window.before
    while True:
        page = await store.list_mailbox(
            window.mailbox, PAGE, before=before, after=window.after, since=window.since
        )
        examined: list[Examined] = []
        for message in page:
            if scanned >= SCAN or read >= SCAN_BYTES:
                break
            scanned += 1
            listed = summarize(message)
            words = search.words_left(listed) if search.headers_match(listed) else None
            read += message.size if words else 0
            examined.append((message, listed, words))
        for (message, listed, _), match in zip(
            examined, await _matches(store, examined, texts_hold), strict=True
        ):
            if match:
                found.append(listed)
            if len(found) >= window.limit:
                return {"messages": found, "next": message.id}
        if len(examined) < len(page):  # a bound stopped the scan: say where to go on
            return (
                {"messages": found, "next": examined[-1][0].id}
                if examined
                else {
                    "messages": found,
                    "next": before,
                }
            )
        if len(page) < PAGE:
            return {"messages": found}
        before = page[-1].id


async def _matches(
    store: MessageStore, examined: list[Examined], texts_hold: TextsHold
) -> list[bool]:
    """Whether each examined message matches: at once where its listing fields decided;
    else by its text. Those are read in batches of at most `BATCH_BYTES` (by their stored
    size; a larger message alone), one store query and one render job a batch, so what
    one search holds in memory at a time is a batch, never a page of messages."""
    matches = [words == [] for _, _, words in examined]
    batches: list[list[int]] = []
    size = 0
    for n, (message, _, words) in enumerate(examined):
        if not words:
            continue
        if not batches or (batches[-1] and size + message.size > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(n)
        size += message.size
    for batch in batches:
        whole = {m.id: m for m in await store.get_many([examined[n][0].id for n in batch])}
        # A message deleted meanwhile matches nothing.
        present = [n for n in batch if examined[n][0].id in whole]
        items = [(whole[examined[n][0].id], examined[n][2] or []) for n in present]
        if items:
            for n, match in zip(present, await texts_hold(items), strict=True):
                matches[n] = match
    return matches


def job(items: list[tuple[MessageDocument, list[str]]]) -> tuple[str, dict[str, Any], bytes]:
    """The render job searching these messages' texts (`api.renderworker.search`): its
    key, head and body (the messages' bytes one after another, their sizes in the head)."""
    key = "search:" + ",".join(f"{m.id}?{'&'.join(words)}" for m, words in items)
    head = {"job": "search", "items": [{"size": len(m.raw), "words": w} for m, w in items]}
    return key, head, b"".join(m.raw for m, _ in items)
