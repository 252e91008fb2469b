"""Every query the message store runs, and the indexes that answer them: one list.

The store builds each query it sends with a builder below (never inline), and
tests/mailstore/test_query_plans.py runs every shape against the store under test: on
MongoDB its `explain()` must be an index scan, on the embedded store every SQL statement
it turns into must be an index search (SQLite's `EXPLAIN QUERY PLAN`). A query added
without a builder here is one the store cannot send.

What the embedded store (nx-27017 over SQLite) can answer from an index, found by reading
its SQL: equality and ranges on a scalar field that has a single-field index (the
expression `json_extract(data, '$.field')`), `$in` on `_id`; `_id` equality and `$in`; a sort on the
indexed field itself. What it answers by reading every document: any query on a field
holding an array (it tests array membership with `json_each`, per document); ranges on
`_id` (evaluated in Python after loading the whole collection); comparisons of dates (a
`datetime()` of each document's value); and, on every read of a collection with a TTL
index, its lazy expiry, which is such a date comparison. Hence the shapes below: mailboxes
are ranges over scalar keys (mailstore.mailboxes), retention ranges over a number, and
the embedded store gets no TTL index.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mailstore.mailboxes import ENTRIES, EntryKey, entry_key, first_key, past_key
from mailstore.message import MessageKey

Document = dict[str, Any]
K = MessageKey
E = EntryKey

MESSAGES = "messages"
STATS = "receiver_stats"  # one live-statistics snapshot per receiver (receiver.telemetry.stats)
STATS_AT = "at"  # a snapshot's time, POSIX seconds
ASCENDING, DESCENDING = 1, -1

LIST_FIELDS: Document = {
    key: 1 for key in (K.ID, K.MAIL_FROM, K.RCPT, K.HEADERS, K.RECEIVED_AT, K.SIZE)
}


class Op(StrEnum):
    FIND = "find"
    DELETE = "delete"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class Query:
    """One query as sent: the filter, and for a find its sort, projection and window."""

    shape: str
    collection: str
    filter: Document
    op: Op = Op.FIND
    sort: tuple[tuple[str, int], ...] = ()
    projection: Document | None = None
    skip: int = 0
    limit: int = 0
    update: Document | None = None


@dataclass(frozen=True, slots=True)
class Index:
    """One index: `ttl` (seconds) is declared only where the engine expires by itself
    without reading the collection (MongoDB)."""

    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    sparse: bool = False
    ttl: int | None = None


INDEXES = (
    # One document per fingerprint (a sender's retry is the same message). Sparse:
    # documents from before fingerprints are not indexed.
    Index(MESSAGES, "fingerprint", ((K.FP, ASCENDING),), unique=True, sparse=True),
    Index(MESSAGES, "expiry", ((K.EXPIRY, ASCENDING),)),
    # Sparse: a message that left its first mailbox has no key.
    Index(MESSAGES, "box", ((K.BOX, ASCENDING),), sparse=True),
    Index(MESSAGES, "retention", ((K.EXPIRES_AT, ASCENDING),), ttl=0),
    Index(ENTRIES, "box", ((E.BOX, ASCENDING),)),
    Index(ENTRIES, "expiry", ((E.EXPIRY, ASCENDING),)),
    Index(STATS, "at", ((STATS_AT, ASCENDING),)),
)
# Indexes of earlier versions, dropped when found: `inbox` on (rcpt, received_at) is
# useless on the embedded store (an array key) and no query uses it any more.
RETIRED = ((MESSAGES, "inbox"),)

SHAPES: dict[str, Callable[..., Query]] = {}


def shape(builder: Callable[..., Query]) -> Callable[..., Query]:
    SHAPES[builder.__name__] = builder
    return builder


def _mailbox_range(
    mailbox: str, *, before: str | None = None, after: str | None = None, since: str | None = None
) -> Document:
    """The keys of `mailbox`, optionally only those before/after a message id or from
    the id `since` on (inclusive)."""
    low, low_inclusive = first_key(mailbox), False
    if after is not None and entry_key(mailbox, after) > low:
        low, low_inclusive = entry_key(mailbox, after), False
    if since is not None and entry_key(mailbox, since) > low:
        low, low_inclusive = entry_key(mailbox, since), True
    high = entry_key(mailbox, before) if before is not None else past_key(mailbox)
    return {"$gte" if low_inclusive else "$gt": low, "$lt": high}


@shape
def inline_page(
    mailbox: str,
    limit: int,
    *,
    before: str | None = None,
    after: str | None = None,
    since: str | None = None,
) -> Query:
    """The newest `limit` messages whose first mailbox is `mailbox`, within the cursor's
    bounds, with the listing's fields."""
    return Query(
        "inline_page",
        MESSAGES,
        {K.BOX: _mailbox_range(mailbox, before=before, after=after, since=since)},
        sort=((K.BOX, DESCENDING),),
        projection={**LIST_FIELDS, K.BOX: 1},
        limit=limit,
    )


@shape
def entries_page(
    mailbox: str,
    limit: int,
    *,
    before: str | None = None,
    after: str | None = None,
    since: str | None = None,
) -> Query:
    """The newest `limit` entries of `mailbox` (its messages that name it second or
    later) within the cursor's bounds."""
    return Query(
        "entries_page",
        ENTRIES,
        {E.BOX: _mailbox_range(mailbox, before=before, after=after, since=since)},
        sort=((E.BOX, DESCENDING),),
        projection={E.ID: 1},
        limit=limit,
    )


@shape
def inline_beyond(mailbox: str, keep: int, limit: int) -> Query:
    """Messages whose first mailbox is `mailbox`, past its `keep` newest."""
    return Query(
        "inline_beyond",
        MESSAGES,
        {K.BOX: _mailbox_range(mailbox)},
        sort=((K.BOX, DESCENDING),),
        projection={K.ID: 1, K.BOX: 1},
        skip=keep,
        limit=limit,
    )


@shape
def entries_beyond(mailbox: str, keep: int, limit: int) -> Query:
    """Entries of `mailbox` past its `keep` newest."""
    return Query(
        "entries_beyond",
        ENTRIES,
        {E.BOX: _mailbox_range(mailbox)},
        sort=((E.BOX, DESCENDING),),
        projection={E.ID: 1},
        skip=keep,
        limit=limit,
    )


@shape
def entries_by_key(keys: Sequence[str]) -> Query:
    return Query("entries_by_key", ENTRIES, {E.ID: {"$in": list(keys)}}, op=Op.DELETE)


@shape
def expired_entries(now: int) -> Query:
    """Entries whose expiry (rounded up to a whole second) is `now` or earlier."""
    return Query("expired_entries", ENTRIES, {E.EXPIRY: {"$lte": now}}, op=Op.DELETE)


@shape
def listed_messages(ids: Sequence[str]) -> Query:
    """Listing fields of these messages (no bytes)."""
    return Query("listed_messages", MESSAGES, {K.ID: {"$in": list(ids)}}, projection=LIST_FIELDS)


@shape
def whole_messages(ids: Sequence[str]) -> Query:
    """These messages, bytes included (a search reading their text: at most a page)."""
    return Query("whole_messages", MESSAGES, {K.ID: {"$in": list(ids)}})


@shape
def message(message_id: str, projection: Document | None = None) -> Query:
    return Query("message", MESSAGES, {K.ID: message_id}, projection=projection, limit=1)


@shape
def delete_message(message_id: str) -> Query:
    return Query("delete_message", MESSAGES, {K.ID: message_id}, op=Op.DELETE)


@shape
def fingerprint(fp: str) -> Query:
    return Query("fingerprint", MESSAGES, {K.FP: fp}, projection={K.ID: 1}, limit=1)


@shape
def leave_first_mailbox(ids: Sequence[str], mailbox: str) -> Query:
    """These messages (whose first mailbox is `mailbox`) leave it: its key goes too."""
    return Query(
        "leave_first_mailbox",
        MESSAGES,
        {K.ID: {"$in": list(ids)}},
        op=Op.UPDATE,
        update={"$pull": {K.RCPT: mailbox}, "$unset": {K.BOX: ""}},
    )


@shape
def leave_mailbox(ids: Sequence[str], mailbox: str) -> Query:
    return Query(
        "leave_mailbox",
        MESSAGES,
        {K.ID: {"$in": list(ids)}},
        op=Op.UPDATE,
        update={"$pull": {K.RCPT: mailbox}},
    )


@shape
def held_by_one(ids: Sequence[str]) -> Query:
    """Those of these messages that one mailbox holds (the one they are leaving): deleted
    at once, in one statement, rather than updated one by one and then deleted."""
    return Query(
        "held_by_one", MESSAGES, {K.ID: {"$in": list(ids)}, K.RCPT: {"$size": 1}}, op=Op.DELETE
    )


@shape
def left_empty(ids: Sequence[str]) -> Query:
    """Those of these messages that no mailbox holds any more."""
    return Query(
        "left_empty", MESSAGES, {K.ID: {"$in": list(ids)}, K.RCPT: {"$size": 0}}, op=Op.DELETE
    )


@shape
def expired_messages(now: int) -> Query:
    return Query("expired_messages", MESSAGES, {K.EXPIRY: {"$lte": now}}, op=Op.DELETE)


@shape
def unindexed_messages(limit: int) -> Query:
    """Messages stored before the mailbox index (no `expiry`): migrated by the sweep.
    `None` matches a missing field, and is an index bound on every engine."""
    return Query(
        "unindexed_messages",
        MESSAGES,
        {K.EXPIRY: None},
        projection={K.ID: 1, K.RCPT: 1, K.EXPIRES_AT: 1, K.RECEIVED_AT: 1},
        limit=limit,
    )


@shape
def index_message(message_id: str, expiry: int, box: str | None) -> Query:
    """A message from before the mailbox index gets its expiry and first mailbox key."""
    fields: Document = {K.EXPIRY: expiry}
    if box is not None:
        fields[K.BOX] = box
    return Query(
        "index_message", MESSAGES, {K.ID: message_id}, op=Op.UPDATE, update={"$set": fields}
    )


@shape
def stale_stats(before: float) -> Query:
    return Query("stale_stats", STATS, {STATS_AT: {"$lt": before}}, op=Op.DELETE)


@shape
def fresh_stats(since: float, limit: int) -> Query:
    return Query("fresh_stats", STATS, {STATS_AT: {"$gte": since}}, limit=limit)


def examples() -> dict[str, Query]:
    """One query of every shape, with placeholder values (for the plan tests)."""
    box, mid = "box@mx.test", "06h4v995xmqkm04qe3393vzyx4"
    made = [
        inline_page(box, 50),
        inline_page(box, 50, before=mid),
        inline_page(box, 50, after=mid),
        inline_page(box, 50, since=mid),
        entries_page(box, 50, before=mid, since=mid),
        inline_beyond(box, 500, 5000),
        entries_beyond(box, 0, 5500),
        entries_by_key([entry_key(box, mid)]),
        expired_entries(1),
        listed_messages([mid]),
        whole_messages([mid]),
        message(mid),
        message(mid, {K.RCPT: 1}),
        delete_message(mid),
        fingerprint("f" * 32),
        leave_first_mailbox([mid], box),
        leave_mailbox([mid], box),
        held_by_one([mid]),
        left_empty([mid]),
        expired_messages(1),
        unindexed_messages(10),
        index_message(mid, 1, entry_key(box, mid)),
        stale_stats(1.0),
        fresh_stats(1.0, 1000),
    ]
    missing = set(SHAPES) - {q.shape for q in made}
    assert not missing, f"shapes without an example: {sorted(missing)}"
    assert all(inspect.isfunction(b) for b in SHAPES.values())
    return {f"{q.shape}#{n}": q for n, q in enumerate(made)}
