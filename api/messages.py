"""Mailbox read endpoints: list a mailbox, read a message (parsed or raw), delete it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from api import models, push, render, search
from api.auth import Role, require_token
from api.charsets import decode_phrases, decode_words
from api.display import ascii_filename
from api.docs import Tag
from api.renderpool import Busy, Outcome, OverShare, RenderPool
from api.shares import Held, client, download_slot, read_share, read_turn, refuse
from mailstore import MessageDocument, MessageStore, is_message_id
from mailstore.addresses import canonical_mailbox

router = APIRouter(dependencies=[Depends(read_share), Depends(read_turn, scope="function")])
# Named formats: the OpenAPI document says what a mailbox and a message id are (the
# contract tests generate values of these formats; see tests/api/schemathesis_hooks.py).
Address = Annotated[
    str, Path(min_length=3, max_length=320, json_schema_extra={"format": "mailbox"})
]
ID_PATTERN = r"^[0-9a-hjkmnp-tv-z]{26}$"
MessageId = Annotated[str, Path(pattern=ID_PATTERN, json_schema_extra={"format": "message-id"})]
Responses = dict[int | str, dict[str, Any]]
_FIELD_START = re.compile(r"\r?\n(?![ \t])")


# Non-JSON answers, each documented with its own media type (and no JSON schema).
class EventStream(StreamingResponse):
    media_type = "text/event-stream"

    async def stream_response(self, send: Callable[[Any], Awaitable[None]]) -> None:
        # A reader that does not take what we write for WRITE_TIMEOUT is dropped: its
        # stream ends (and its hub slot with it) instead of waiting on it for ever.
        async def timed(message: MutableMapping[str, Any]) -> None:
            async with asyncio.timeout(push.WRITE_TIMEOUT):
                await send(message)

        with contextlib.suppress(TimeoutError):
            await super().stream_response(timed)


class RawMessage(Held):
    media_type = "message/rfc822"


class Download(Held):
    media_type = "application/octet-stream"


def store_of(request: Request) -> MessageStore:
    store: MessageStore = request.app.state.store
    return store


def decoded(value: str) -> str:
    """RFC 2047 encoded words decoded (allowlisted charsets, linear: `api.charsets`); the
    receiver stores header values undecoded, capped at 998 characters."""
    return decode_words(value)


def summary(message: MessageDocument, role: Role = Role.ADMIN) -> dict[str, Any]:
    """The listing fields of a stored message. Only the admin sees envelope recipients
    where the sender wrote no To: (a reader sees only what the sender wrote: no Bcc)."""
    headers = message.headers
    envelope_to = ", ".join(message.rcpt) if role is Role.ADMIN else ""
    return {
        "id": message.id,
        # Display names decoded, addresses never (RFC 2047 5): what DMARC judged is shown.
        "from": decode_phrases(headers.get("from") or message.mail_from),
        "to": decode_phrases(headers.get("to") or envelope_to),
        "subject": decoded(headers.get("subject", "")),
        "received_at": message.received_at.isoformat(),
        "size": message.size,
    }


@router.get(
    "/v1/mailboxes/{address}/messages",
    response_model=models.Listing,
    response_model_exclude_unset=True,
    tags=[Tag.MAILBOXES],
    summary="List a mailbox, newest first",
)
async def list_messages(
    request: Request,
    address: Address,
    role: Annotated[Role, Depends(require_token)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="a message id: older ones")
    ] = None,
    after: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="a message id: newer ones")
    ] = None,
    since: Annotated[
        str | None,
        Query(
            description="received at or after (RFC 3339)", json_schema_extra={"format": "date-time"}
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=search.MAX_QUERY,
            description="search: `from:`, `to:`, `subject:` terms (quoted values allowed) "
            "and free words (in the subject, From or text); every term must hold",
        ),
    ] = None,
) -> dict[str, Any]:
    """Messages for `address` (case-insensitive, canonical as the receiver stores it),
    newest first; `next` is the `before` cursor of the following page. With `q`, only
    those matching it, from at most 1,000 messages examined a call (`next` then says
    where to go on)."""
    mailbox = mailbox_of(address)
    for name, cursor in (("before", before), ("after", after)):
        if cursor is not None and not is_message_id(cursor):
            raise HTTPException(status_code=422, detail=f"{name}: not a message id")
    if q is not None:
        try:
            query = search.parse(q)
        except search.Invalid as invalid:
            raise HTTPException(status_code=422, detail=str(invalid)) from None
        window = search.Window(mailbox, limit, before, after, moment_of(since))
        return await _search(request, query, window, role)
    docs = await store_of(request).list_mailbox(
        mailbox, limit, before=before, after=after, since=moment_of(since)
    )
    result: dict[str, Any] = {"messages": [summary(doc, role) for doc in docs]}
    if len(docs) == limit:
        result["next"] = docs[-1].id
    return result


async def _search(
    request: Request, query: search.Search, window: search.Window, role: Role
) -> dict[str, Any]:
    async def texts_hold(items: list[tuple[MessageDocument, list[str]]]) -> list[bool]:
        """One render job for the batch; if it fails (its deadline or memory), one job a
        message, so that one message past the bounds does not hide the others."""
        outcome = await render_job(request, *search.job(items))
        if outcome.failure is None and "matches" in outcome.head:
            return [bool(m) for m in outcome.head["matches"]]
        if len(items) == 1:
            return [False]  # cannot be read within the bounds: no match
        return [(await texts_hold([item]))[0] for item in items]

    return await search.scan(
        store_of(request), query, window, lambda doc: summary(doc, role), texts_hold
    )


@router.get(
    "/v1/mailboxes/{address}/events",
    response_class=EventStream,
    responses=models.binary("Server-Sent Events"),
    tags=[Tag.MAILBOXES],
    summary="Follow a mailbox live (Server-Sent Events)",
)
async def mailbox_events(
    request: Request,
    address: Address,
    role: Annotated[Role, Depends(require_token)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStream:
    """New messages of `address` as Server-Sent Events (`event: message`, `id:` the
    message id, `data:` its listing entry); heartbeats every 15 s; after a reconnect with
    `Last-Event-ID`, the messages since that id first (at most 100)."""
    mailbox = mailbox_of(address)
    hub: push.Hub = request.app.state.hub
    # Subscribe before reading the catch-up, so nothing can fall between the two.
    try:
        subscriber = hub.subscribe(mailbox, client(request))
    except push.Full as full:
        raise HTTPException(full.status, str(full), headers={"Retry-After": "5"}) from None
    try:
        backlog: list[MessageDocument] = []
        if last_event_id is not None and is_message_id(last_event_id):
            docs = await store_of(request).list_mailbox(mailbox, push.CATCH_UP, after=last_event_id)
            backlog = list(reversed(docs))
    except BaseException:
        hub.unsubscribe(subscriber)
        raise
    stream = push.events(hub, subscriber, backlog, lambda doc: summary(doc, role))
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return EventStream(stream, headers=headers)


@router.delete(
    "/v1/mailboxes/{address}/messages",
    response_model=models.Deleted,
    tags=[Tag.MAILBOXES],
    summary="Empty a mailbox",
)
async def delete_mailbox(request: Request, address: Address) -> dict[str, int]:
    """Empty a mailbox: its messages leave it (and the store, if no other mailbox has
    them)."""
    return {"deleted": await store_of(request).delete_mailbox(mailbox_of(address))}


def moment_of(text: str | None) -> datetime | None:
    """An RFC 3339 date-time (a bare number is not one), as an aware datetime."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise HTTPException(status_code=422, detail="since: not an RFC 3339 date-time") from None
    if "T" not in text.upper():
        raise HTTPException(status_code=422, detail="since: not an RFC 3339 date-time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def mailbox_of(address: str) -> str:
    mailbox = canonical_mailbox(address)
    if mailbox is None:
        raise HTTPException(status_code=422, detail=f"{address!r} is not a mailbox address")
    return mailbox


async def _get(request: Request, message_id: MessageId) -> MessageDocument:
    doc = await store_of(request).get(message_id) if is_message_id(message_id) else None
    if doc is None:
        raise HTTPException(status_code=404, detail=f"no message with id {message_id!r}")
    return doc


@router.get(
    "/v1/messages/{message_id}",
    response_model=models.MessageDetail,
    response_model_exclude_unset=True,
    tags=[Tag.MESSAGES],
    summary="Read a message, parsed for display",
)
async def get_message(
    request: Request, message_id: MessageId, role: Annotated[Role, Depends(require_token)]
) -> dict[str, Any]:
    """Metadata plus decoded headers and text; the envelope for the admin only."""
    await _refuse_over_share(request)
    message = await _get(request, message_id)
    result = summary(message, role)
    tls = message.tls
    result["tls"] = {"version": tls.version, "cipher": tls.cipher} if tls is not None else None
    result["auth"] = message.auth  # SPF, DKIM, DMARC verdicts stored with it, if checked
    if role is Role.ADMIN:
        result.update(
            {
                "envelope": {"mail_from": message.mail_from, "rcpt_to": list(message.rcpt)},
                "peer_ip": message.peer_ip,
                "helo": message.helo,
            }
        )
    raw = message.raw
    outcome = await render_job(request, f"{message_id}/view", {"job": "view"}, raw)
    if outcome.failure is not None:
        result.update(render.fallback(raw, outcome.failure))
    else:
        result.update(outcome.head["view"])
    result["headers"] = own_headers(message.received_header) + result["headers"]
    return result


def own_headers(received_header: bytes) -> list[list[str]]:
    """The fields this service wrote on top of the message (our Authentication-Results,
    then our Received:), unfolded: shown first in the header list, so that our verdict is
    the first one a reader sees, above anything the sender wrote. Our own bytes, ASCII,
    a few hundred of them: split here, not in a render worker."""
    text = received_header.decode("ascii", "replace")
    fields = []
    for chunk in _FIELD_START.split(text.strip("\r\n")):
        name, colon, value = chunk.partition(":")
        if colon:
            fields.append([name.strip(), " ".join(value.split())])
    return fields


OVER_SHARE = "too many renders waiting for this client; retry later"


async def _refuse_over_share(request: Request) -> None:
    """429 before the store is asked, when the client's renders already wait their share."""
    pool: RenderPool = request.app.state.renderer
    if pool.over_share(client(request)):
        await refuse(request, OVER_SHARE)


async def render_job(request: Request, key: str, job: dict[str, Any], raw: bytes) -> Outcome:
    pool: RenderPool = request.app.state.renderer
    try:
        return await pool.run(key, job, raw, client(request))
    except Busy:
        raise HTTPException(
            status_code=503,
            detail="too many messages being rendered; retry later",
            headers={"Retry-After": "1"},
        ) from None
    except OverShare:
        await refuse(request, OVER_SHARE)


@router.get(
    "/v1/messages/{message_id}/attachments/{index}",
    response_class=Download,
    responses={
        **models.binary("the attachment"),
        # Served as the type its part declares (RFC 2046 media types): any type at all.
        200: {"description": "the attachment, as its declared type", "content": {"*/*": {}}},
    },
    tags=[Tag.MESSAGES],
    summary="Download one attachment",
)
async def get_attachment(
    request: Request, message_id: MessageId, index: Annotated[int, PathParam(ge=0, le=99)]
) -> Response:
    """Attachment `index` (from the message's `attachments`) as a download, whole; 422 if
    its bytes cannot be recovered exactly (the message as sent is at `/raw`); 429 while
    the client already has its share of downloads running."""
    release = await download_slot(request)
    try:
        answer = await _attachment(request, message_id, index)
    except BaseException:
        release()
        raise
    answer.release = release
    return answer


async def _attachment(request: Request, message_id: str, index: int) -> Download:
    await _refuse_over_share(request)
    message = await _get(request, message_id)
    job = {"job": "attachment", "index": index}
    outcome = await render_job(request, f"{message_id}/attachment/{index}", job, message.raw)
    if outcome.head.get("missing"):
        raise HTTPException(status_code=404, detail=f"no attachment {index} in {message_id}")
    reason = outcome.failure or outcome.head.get("unextractable")
    if reason is not None:
        raise HTTPException(
            status_code=422,
            detail=f"attachment {index} cannot be extracted intact ({reason}); "
            f"the message as received is at /v1/messages/{message_id}/raw",
        )
    data = outcome.body
    content_type, filename = outcome.head["content_type"], outcome.head["filename"]
    # RFC 6266 4.3: `filename*` (RFC 5987/8187 UTF-8) for the name, and an ASCII
    # `filename` for clients that know no other; the name is at most 200 bytes of UTF-8.
    disposition = (
        f'attachment; filename="{ascii_filename(filename)}"; '
        f"filename*=UTF-8''{quote(filename, safe='')}"
    )
    return Download(
        content=data,
        media_type=content_type,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/v1/messages/{message_id}/inline/{index}",
    response_class=Download,
    responses={
        **models.binary("the image"),
        200: {"description": "the image, as its declared type", "content": {"image/*": {}}},
    },
    tags=[Tag.MESSAGES],
    summary="One inline image (for cid: URLs)",
)
async def get_inline(
    request: Request, message_id: MessageId, index: Annotated[int, PathParam(ge=0, le=99)]
) -> Response:
    """Inline image `index` (from the message's `inline`: the parts its HTML names by
    `cid:` URL), whole; 404 if there is no such part, 422 if its bytes cannot be recovered
    exactly."""
    message = await _get(request, message_id)
    job = {"job": "attachment", "index": index, "inline": True}
    outcome = await render_job(request, f"{message_id}/inline/{index}", job, message.raw)
    if outcome.head.get("missing"):
        raise HTTPException(status_code=404, detail=f"no inline image {index} in {message_id}")
    reason = outcome.failure or outcome.head.get("unextractable")
    if reason is not None:
        raise HTTPException(
            status_code=422,
            detail=f"inline image {index} cannot be extracted intact ({reason}); "
            f"the message as received is at /v1/messages/{message_id}/raw",
        )
    filename = outcome.head["filename"]
    return Response(
        content=outcome.body,
        media_type=outcome.head["content_type"],
        headers={
            "Content-Disposition": f'inline; filename="{ascii_filename(filename)}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}",
            "X-Content-Type-Options": "nosniff",
            # Opened on its own (an SVG is an image/* too), it may run nothing.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )


@router.get(
    "/v1/messages/{message_id}/links",
    response_model=models.Links,
    responses={504: {"model": models.ErrorBody, "description": "over the render bounds"}},
    tags=[Tag.MESSAGES],
    summary="Links and one-time codes of a message",
)
async def get_links(request: Request, message_id: MessageId) -> dict[str, Any]:
    """Links (http, https, mailto) of the text and HTML parts and likely one-time codes,
    found in a render worker under the render bounds; 504 if the message cannot be read
    within them, 422 if it has no parts to read (its bytes are at `/raw`)."""
    await _refuse_over_share(request)
    message = await _get(request, message_id)
    outcome = await render_job(request, f"{message_id}/links", {"job": "links"}, message.raw)
    if outcome.failure is not None:
        raise HTTPException(
            status_code=504, detail=f"links could not be read within bounds: {outcome.failure}"
        )
    if "unparseable" in outcome.head:
        raise HTTPException(
            status_code=422,
            detail=f"{outcome.head['unparseable']}; the message as received is at "
            f"/v1/messages/{message_id}/raw",
        )
    found: dict[str, Any] = outcome.head["links"]
    return found


@router.get(
    "/v1/messages/{message_id}/raw",
    response_class=RawMessage,
    responses=models.binary("the message as received"),
    tags=[Tag.MESSAGES],
    summary="The message as received (message/rfc822)",
)
async def get_raw(request: Request, message_id: MessageId) -> Response:
    """The message bytes as received, with our Received: line on top; 429 while the
    client already has its share of downloads running."""
    release = await download_slot(request)
    try:
        message = await _get(request, message_id)
    except BaseException:
        release()
        raise
    answer = RawMessage(content=message.received_header + message.raw)
    answer.release = release
    return answer


@router.delete(
    "/v1/messages/{message_id}", status_code=204, tags=[Tag.MESSAGES], summary="Delete a message"
)
async def delete_message(request: Request, message_id: MessageId) -> Response:
    """Remove the message from the store (from every mailbox it was delivered to); 404 if
    there is no such message."""
    if not is_message_id(message_id) or not await store_of(request).delete(message_id):
        raise HTTPException(status_code=404, detail=f"no message with id {message_id!r}")
    pool: RenderPool = request.app.state.renderer
    pool.forget(message_id)  # its kept answers: nobody can ask for them any more
    return Response(status_code=204)
