"""The API's response shapes: the OpenAPI document states them, and FastAPI holds every
answer to them (a field that drifts from its model is a 500 in the tests, never a silent
change for the front ends that read these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class MessageSummary(Model):
    """One message in a listing (and the `data` of a push event)."""

    id: str = Field(description="message id (26 base32 characters, time-ordered)")
    from_: str = Field(
        alias="from", description="the From: header, display names decoded, addresses as sent"
    )
    to: str = Field(description="the To: header; for the admin, the envelope if none")
    subject: str
    received_at: str = Field(description="RFC 3339")
    size: int = Field(description="bytes as received")


class Listing(Model):
    messages: list[MessageSummary]
    next: str | None = Field(None, description="the `before` cursor of the next page")


class Deleted(Model):
    deleted: int = Field(description="messages removed from the mailbox")


class Address(Model):
    name: str
    address: str


class Attachment(Model):
    filename: str | None = Field(
        description="at most 200 bytes of UTF-8 (extension kept), bidi controls as [U+XXXX]"
    )
    content_type: str
    size: int = Field(description="decoded bytes")


class InlinePart(Model):
    """An image of the message that its HTML shows by `cid:` URL (RFC 2392)."""

    content_id: str = Field(description="its Content-ID without <>: `cid:` URLs name it")
    filename: str | None
    content_type: str = Field(description="image/*")
    size: int = Field(description="decoded bytes")


class Envelope(Model):
    mail_from: str
    rcpt_to: list[str]


class TlsInfo(Model):
    version: str = Field(description="e.g. TLSv1.3")
    cipher: str


# RFC 8601 2.7: `policy` is a DKIM signature that verified but is not acceptable (an l=
# that leaves part of the body unsigned).
AuthResult = Literal[
    "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"
]


class SpfVerdict(Model):
    result: AuthResult
    domain: str = Field(description="the domain checked: MAIL FROM's (or HELO's) domain")
    reason: str = Field(description="why, in a few words; may be empty")


class DkimVerdict(Model):
    result: AuthResult
    domain: str = Field(description="the signing domain (d=)")
    selector: str = Field(description="the key selector (s=)")
    reason: str


class DmarcVerdict(Model):
    result: AuthResult
    domain: str = Field(description="the From: header's domain")
    policy: Literal["none", "quarantine", "reject"] | None = Field(
        description="the policy published for that domain; null when none is"
    )
    spf_aligned: bool = Field(description="SPF passed for a domain aligned with From:")
    dkim_aligned: bool = Field(description="a DKIM signature passed for an aligned domain")
    reason: str


class ArcVerdict(Model):
    result: AuthResult
    reason: str


class AuthVerdicts(Model):
    """What the receiver found about who sent the message (RFC 8601 results)."""

    spf: SpfVerdict = Field(description="SPF of the envelope sender (MAIL FROM)")
    helo: SpfVerdict = Field(description="SPF of the HELO name")
    dkim: list[DkimVerdict] = Field(description="every DKIM signature, in header order")
    dmarc: DmarcVerdict
    arc: ArcVerdict


class MessageDetail(Model):
    """A message parsed for display. `envelope`, `peer_ip` and `helo` are shown to the
    admin token only: a reader sees only what the sender wrote (no Bcc)."""

    id: str
    from_: list[Address] = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    subject: str
    received_at: str
    size: int
    from_repaired: bool = Field(
        False,
        description="the From: field is malformed (e.g. an encoded word in its address, "
        "RFC 2047 5): `from` holds its literal text, not what a lenient reader makes of it",
    )
    headers: list[tuple[str, str]] = Field(
        description="[name, value], ours (Authentication-Results, Received) first, then the "
        "message's in order; encoded words decoded only in unstructured text and display "
        "names (RFC 2047 5), structured fields as sent"
    )
    text: str | None
    html: str | None = Field(description="the HTML part as sent: never display it as is")
    html_safe: str | None = Field(description="the HTML part sanitised, for display")
    attachments: list[Attachment]
    inline: list[InlinePart] = Field(
        default_factory=list,
        description="images with a Content-ID, in order: `GET .../inline/{index}` serves one",
    )
    parse_error: str | None = Field(description="why the message rendered only in part")
    tls: TlsInfo | None = Field(None, description="how it came over STARTTLS; null if in clear")
    auth: AuthVerdicts | None = Field(
        None, description="SPF, DKIM, DMARC and ARC verdicts; null when the checks were off"
    )
    envelope: Envelope | None = None
    peer_ip: str | None = None
    helo: str | None = None


class Link(Model):
    url: str = Field(description="as sent (http, https or mailto): redirects not followed")
    text: str | None = Field(
        description="the anchor's text (or a linked image's alt), bidi controls as [U+XXXX]"
    )
    source: Literal["text", "html"] = Field(description="the part it was first found in")
    display: str = Field(
        description="the URL to show: bidi controls percent-encoded, a host mixing scripts "
        "as IDNA A-labels (xn--)"
    )
    host: str | None = Field(description="where the link goes, shown as in `display`")
    userinfo: str | None = Field(
        description="what stands before `@` in the authority (RFC 3986 3.2.1): not where "
        "the link goes (`https://paypal.com@evil.test/` goes to evil.test); null if none"
    )
    unsigned: bool = Field(
        description="found only in text past a DKIM signature's l= length: no signature "
        "vouches for it (RFC 6376 8.2)"
    )


class Code(Model):
    code: str = Field(description="as written (digits, or capitals and digits)")
    context: str = Field(description="the words around it, bidi controls as [U+XXXX]")
    unsigned: bool = Field(description="found only in text past a DKIM signature's l=")


class Links(Model):
    """The links and likely one-time codes of a message, so a test script does not have
    to scrape HTML."""

    links: list[Link] = Field(description="de-duplicated, HTML part first, then text")
    codes: list[Code] = Field(description="subject first, then text, then the HTML's text")
    truncated: bool = Field(
        description="true if anything was cut: links or codes left out, or text past the "
        "limits not searched"
    )


class Awaited(Model):
    """The awaited message (`GET /v1/mailboxes/{address}/wait`): its listing entry, and
    its links and likely one-time codes as `/v1/messages/{id}/links` gives them."""

    message: MessageSummary
    links: list[Link] = Field(description="de-duplicated, HTML part first, then text")
    codes: list[Code] = Field(description="subject first, then text, then the HTML's text")
    truncated: bool = Field(
        description="true if some links or codes were left out (or the message could not "
        "be read within the render bounds)"
    )


class AccessEntry(Model):
    cidr: str
    reason: str
    source: Literal["manual", "auto"]
    created_at: str
    created_by: str
    updated_at: str
    expires_at: str | None


class AddedEntry(AccessEntry):
    lifted: list[str] | None = Field(
        None, description="allowlist only: the automatic bans this entry lifted"
    )


class EntryPage(Model):
    entries: list[AccessEntry]
    next: str | None = Field(None, description="pass as `after` for the next page")


class Removed(Model):
    removed: int = Field(description="entries removed")


class BulkResult(Model):
    added: int
    updated: int
    lifted: list[str] | None = None


class BlockCheck(Model):
    blocked: bool
    entry: AccessEntry | None = Field(description="the entry that blocks the address")


class AllowCheck(Model):
    allowed: bool
    entry: AccessEntry | None = Field(description="the entry that allows the address")


class AuditRecord(Model):
    model_config = ConfigDict(extra="allow")
    action: str
    cidr: str
    actor: str
    at: str


class History(Model):
    cidr: str
    history: list[AuditRecord]


class Status(Model):
    status: str


class ErrorBody(BaseModel):
    """Every error: what went wrong, in one sentence (and, for 422, per field)."""

    error: str
    details: list[dict[str, Any]] | None = None


# Documented on every route: the OpenAPI document is the contract.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "malformed request"),
        (401, "missing or invalid bearer token"),
        (403, "the read token may not use this route"),
        (404, "no such thing"),
        (405, "method not allowed (see Allow)"),
        (413, "request body too large"),
        (422, "invalid request, or an attachment that cannot be extracted intact (see /raw)"),
        (
            429,
            "this client's share is taken: reads a second, renders waiting, downloads at "
            "once, or live streams (see Retry-After)",
        ),
        (503, "the store is unavailable, too many live subscribers, or the renderer is busy"),
    )
}


def binary(description: str) -> dict[int | str, dict[str, Any]]:
    """The responses of a route whose answer is not JSON: FastAPI would document its errors
    under the route's media type, so they are spelled out as the JSON they are."""
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    errors = {
        code: {
            "description": error["description"],
            "content": {"application/json": {"schema": ref}},
        }
        for code, error in ERRORS.items()
    }
    return {200: {"description": description, "content": {}}, **errors}


# --- live statistics (GET /v1/stats) ---------------------------------------------------

Tops = list[tuple[str, int]]


class Window(Model):
    refusals: Tops = Field(description="[client, refusals], heaviest first")
    connections: Tops = Field(
        default_factory=list, description="[client, connections admitted], heaviest first"
    )
    messages: Tops = Field(description="[client, messages stored]")
    bytes: Tops = Field(description="[client, bytes stored]")
    reasons: dict[str, int] = Field(description="refusals by reason")
    by_reason: dict[str, Tops] = Field(
        default_factory=dict, description="per reason: [client, refusals], heaviest first"
    )
    error_bound: dict[str, int] = Field(
        description="per measure: no count is short of the truth by more than this"
    )


class Totals(Model):
    accepted: int = Field(description="connections admitted since the receiver started")
    refused: int
    stored: int
    stored_bytes: int


class SpoolState(Model):
    messages: int
    bytes: int
    oldest_s: float = Field(description="age of the oldest spooled message, seconds")


class ReceiverStats(Model):
    receiver: str
    at: float = Field(description="when it was published (Unix time, the receiver's clock)")
    age_s: float = Field(description="seconds since this snapshot was published")
    stress: bool
    store_up: bool | None
    store_reason: str
    open_connections: int
    spool: SpoolState | None = Field(
        None, description="messages held on the receiver's disk while the store is away"
    )
    top_open: Tops = Field(description="[client, open connections], exact")
    totals: Totals
    windows: dict[str, Window] = Field(description="`1m` and `5m`")


class Overall(Model):
    receivers: int
    open_connections: int
    top_open: Tops
    windows: dict[str, Window]


class ClientState(Model):
    blocked: bool
    source: Literal["manual", "auto"] | None = None
    expires_at: str | None = None


class StatsSource(Model):
    """Whether the statistics were read from the store just now, or kept from before."""

    up: bool = Field(description="the store answered: these are live statistics")
    read_at: float | None = Field(
        description="when the statistics shown were read from the store (Unix time); null: "
        "never, since this API started"
    )
    away_since: float | None = Field(
        description="since when the store has not answered (Unix time); null while it does"
    )
    reason: str = Field(description="why the store does not answer (`refused: ...`, ...)")


class Stats(Model):
    """Every live receiver's snapshot (published every 5 s; older than 30 s: left out),
    merged: a client flooding several receivers adds up. While the store is away: the
    last snapshot this API read, `store` saying since when."""

    receivers: list[ReceiverStats]
    overall: Overall
    clients: dict[str, ClientState] = Field(
        description="the blocklist state of every client named in `overall`"
    )
    store: StatsSource
