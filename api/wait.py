"""Wait for a message: the first one to reach a mailbox after a cursor that matches a few
criteria, with its links and codes, for the scripts that read disposable mail.

A waiter is a live-push subscriber (`api.push.Hub`): it takes a slot of the same shares
(per client, per mailbox, in all; 429 or 503 beyond) and is fed by the same change stream,
so a thousand waiters cost the store nothing while they wait. What arrived between the
cursor and the call is found by one bounded read of the mailbox after the cursor, made
after subscribing so that nothing falls between the two. Subject and From are compared in
this process (decoded header values, at most 998 characters each: linear); the body and
the links and codes are read in a render worker, under the render bounds, once per
candidate message that passed the cheap tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from api import models, push
from api.auth import Role, require_token
from api.docs import Tag
from api.links import body_contains
from api.messages import ID_PATTERN, Address, mailbox_of, moment_of, render_job, store_of, summary
from mailstore import MessageDocument, is_message_id
from mailstore.ids import id_floor

router = APIRouter()

MAX_TIMEOUT = 60.0  # seconds one call may wait
DEFAULT_TIMEOUT = 30.0
# Messages after the cursor read at the start: more than a mailbox holds at the default
# cap (FLOODGATE_MAILBOX_MAX_MESSAGES 500, trimmed past 10 % more).
CATCH_UP = 1_000
MAX_NEEDLE = 200  # characters of one criterion

Answer = dict[str, Any]


class Has(StrEnum):
    LINK = "link"
    CODE = "code"
    ANY = "any"  # a link or a code


@dataclass(frozen=True, slots=True)
class Criteria:
    """What the awaited message must have; every string compared case-insensitively."""

    subject: str | None = None
    sender: str | None = None
    body: str | None = None
    has: Has | None = None

    def headers_match(self, listed: dict[str, Any]) -> bool:
        """The cheap tests, on a message's listing entry (decoded Subject and From)."""
        return (self.subject is None or body_contains(self.subject, listed["subject"])) and (
            self.sender is None or body_contains(self.sender, listed["from"])
        )

    def found_match(self, found: dict[str, Any]) -> bool:
        """The tests that need the message read: its body, its links and codes."""
        if self.body is not None and not found.get("contains", False):
            return False
        links, codes = bool(found["links"]), bool(found["codes"])
        match self.has:
            case Has.LINK:
                return links
            case Has.CODE:
                return codes
            case Has.ANY:
                return links or codes
        return True


class Waiter:
    """One call's search: candidates in arrival order, each looked at once."""

    def __init__(self, request: Request, criteria: Criteria, bounds: Bounds, role: Role) -> None:
        self.request = request
        self.criteria = criteria
        self.bounds = bounds
        self.role = role
        # Ids read from the store: an event may bring them again. At most `CATCH_UP` a
        # read (the hub brings each insert once).
        self.seen: set[str] = set()

    async def examine(self, message: MessageDocument, *, stored: bool = False) -> Answer | None:
        """The answer if `message` is the one awaited, else None."""
        if not self.bounds.admits(message.id) or message.id in self.seen:
            return None
        if stored:
            self.seen.add(message.id)
        listed = summary(message, self.role)
        if not self.criteria.headers_match(listed):
            return None
        if not message.raw:  # from a listing (no bytes): read it whole
            whole = await store_of(self.request).get(message.id)
            if whole is None:  # deleted meanwhile
                return None
            message = whole
        found = await self._links(message)
        if found is None or not self.criteria.found_match(found):
            return None
        return {"message": listed, **{k: found[k] for k in ("links", "codes", "truncated")}}

    async def _links(self, message: MessageDocument) -> dict[str, Any] | None:
        """The links and codes (and the body test) from a render worker. A message that
        cannot be read within the render bounds is still the answer when nothing but its
        headers was asked for (without links, `truncated`); else None: it cannot be told
        whether it matches."""
        needle = self.criteria.body
        job: dict[str, Any] = {"job": "links"}
        key = f"{message.id}/links"
        if needle is not None:
            job["contains"] = needle
            key = f"{message.id}/links?contains={needle}"
        outcome = await render_job(self.request, key, job, message.raw)
        if outcome.failure is None and "links" in outcome.head:
            found: dict[str, Any] = outcome.head["links"]
            return found
        if needle is None and self.criteria.has is None:
            return {"links": [], "codes": [], "truncated": True}
        return None


@dataclass(frozen=True, slots=True)
class Bounds:
    """Which ids count: above `after` (a message id) and from `floor` on (the first id of
    a millisecond: ids sort by the time the receiver took the message)."""

    after: str | None = None
    floor: str | None = None
    since: datetime | None = None  # the same floor as a time, for the store's listing

    def admits(self, message_id: str) -> bool:
        return (self.after is None or message_id > self.after) and (
            self.floor is None or message_id >= self.floor
        )


@router.get(
    "/v1/mailboxes/{address}/wait",
    response_model=models.Awaited,
    responses={
        204: {"description": "no matching message arrived within `timeout`"},
        422: {"model": models.ErrorBody, "description": "invalid address, cursor or criteria"},
        429: {
            "model": models.ErrorBody,
            "description": "this client's or mailbox's share "
            "of waiters and live streams is taken (see Retry-After)",
        },
    },
    tags=[Tag.MAILBOXES],
    summary="Wait for a message, with its links and codes",
)
async def wait_for_message(
    request: Request,
    address: Address,
    role: Annotated[Role, Depends(require_token)],
    after: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="a message id: only messages after it count"),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            description="only messages received at or after this time count (RFC 3339)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    subject: Annotated[
        str | None, Query(min_length=1, max_length=MAX_NEEDLE, description="Subject contains")
    ] = None,
    sender: Annotated[
        str | None,
        Query(alias="from", min_length=1, max_length=MAX_NEEDLE, description="From contains"),
    ] = None,
    body: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_NEEDLE, description="the text or HTML text contains"),
    ] = None,
    has: Annotated[
        Has | None, Query(description="has a `link`, a `code`, or `any` (either)")
    ] = None,
    seconds: Annotated[
        float,
        Query(alias="timeout", ge=0, le=MAX_TIMEOUT, description="seconds to wait (at most 60)"),
    ] = DEFAULT_TIMEOUT,
) -> Any:
    """The first message to reach `address` after the cursor (`after` a message id, or
    `since` a time; by default, the moment of the call) that matches every criterion
    given (each compared case-insensitively), with its listing entry, links and codes;
    `204` if none arrives within `timeout` seconds. Criteria other than `subject` and
    `from` read the message under the render bounds; a message that cannot be read within
    them does not match them."""
    started = time.time()
    mailbox = mailbox_of(address)
    if after is not None and not is_message_id(after):
        raise HTTPException(status_code=422, detail="after: not a message id")
    moment = moment_of(since)
    if moment is None and after is None:
        moment = datetime.fromtimestamp(started, UTC)  # by default: from the call on
    floor = id_floor(moment.timestamp()) if moment is not None else None
    waiter = Waiter(
        request, Criteria(subject, sender, body, has), Bounds(after, floor, moment), role
    )
    found = await _first(waiter, mailbox, started + seconds)
    if found is None:
        return Response(status_code=204)
    return found


@contextlib.asynccontextmanager
async def _slot(hub: push.Hub, mailbox: str, client: str) -> AsyncIterator[push.Subscriber]:
    """A hub slot for as long as the call waits (429/503 with Retry-After when the
    client's or the mailbox's share, or every slot, is taken)."""
    try:
        subscriber = hub.subscribe(mailbox, client)
    except push.Full as full:
        raise HTTPException(full.status, str(full), headers={"Retry-After": "5"}) from None
    try:
        yield subscriber
    finally:
        hub.unsubscribe(subscriber)


async def _first(waiter: Waiter, mailbox: str, deadline: float) -> Answer | None:
    """The awaited message's answer: subscribed first, then from the mailbox after the
    cursor, then from events until `deadline` or until the caller hangs up. A waiter that
    fell `push.QUEUE` events behind (its slot dropped while a render kept it busy)
    subscribes and reads again."""
    request = waiter.request
    hub: push.Hub = request.app.state.hub
    client = push.client_key(request.client.host if request.client else "")
    # Nothing wakes an idle wait but a message, its deadline or its caller leaving (no
    # timer a waiter: a thousand of them cost nothing while they wait).
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:  # at least once: `timeout=0` still reads what is stored
            async with _slot(hub, mailbox, client) as subscriber:
                if (found := await _catch_up(waiter, mailbox, deadline)) is not None:
                    return found
                while not subscriber.dropped:
                    message = await _next(subscriber, gone, deadline)
                    if message is None:
                        return None
                    if (found := await waiter.examine(message)) is not None:
                        return found
            if time.time() >= deadline:
                return None
    finally:
        gone.cancel()


async def _next(
    subscriber: push.Subscriber, gone: asyncio.Future[None], deadline: float
) -> MessageDocument | None:
    """The subscriber's next message; None at the deadline or once the caller is gone."""
    left = deadline - time.time()
    if left <= 0 or gone.done():
        return None
    getter = asyncio.ensure_future(subscriber.queue.get())
    either: set[asyncio.Future[Any]] = {getter, gone}
    try:
        await asyncio.wait(either, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


async def _disconnected(request: Request) -> None:
    """Returns when the caller hangs up (ASGI's `http.disconnect`; the request had no body
    to read, the gate replays an empty one first)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _catch_up(waiter: Waiter, mailbox: str, deadline: float) -> Answer | None:
    """The first match among the messages already stored within the bounds, oldest
    first, as far as the call's deadline lets it read (each candidate is one read and
    one render)."""
    bounds = waiter.bounds
    stored = await store_of(waiter.request).list_mailbox(
        mailbox, CATCH_UP, after=bounds.after, since=bounds.since
    )
    for message in reversed(stored):
        if (found := await waiter.examine(message, stored=True)) is not None:
            return found
        if time.time() >= deadline:
            break
    return None
