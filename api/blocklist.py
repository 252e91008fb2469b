"""Access-list admin endpoints (blocklist and allowlist, the same shapes). They only write
to MongoDB: receivers pick changes up from there.

`POST /v1/blocklist` answers 201 when the entry is new and 200 when an existing entry was
updated (re-adding is idempotent: reason, source and expiry are replaced). The allowlist is
the same under `/v1/allowlist` (the reason is the entry's note; entries are always
`manual`), and adding an allowlist entry lifts the automatic bans it covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, field_validator
from pymongo.errors import PyMongoError

from api import models
from api.docs import Tag
from blocklist import BlocklistRepository, Entry, InvalidEntry, normalize, parse_address
from blocklist.entries import MAX_REASON_LENGTH, MAX_TTL_SECONDS, MIN_TTL_SECONDS
from blocklist.repository import MAX_BULK, MAX_PAGE

MAX_ACTOR = 100


@dataclass(frozen=True)
class AccessList:
    """What differs between the two lists' routes."""

    name: str  # path segment and app.state attribute
    verdict: str  # the key of `check`'s answer
    lifts_bans: bool  # adding an entry removes the automatic bans it covers
    check_model: type[models.Model]  # the answer of `check`


BLOCKLIST = AccessList("blocklist", "blocked", lifts_bans=False, check_model=models.BlockCheck)
ALLOWLIST = AccessList("allowlist", "allowed", lifts_bans=True, check_model=models.AllowCheck)


# Named formats in the OpenAPI document (the contract tests generate values of them).
CIDR: dict[str, JsonValue] = {"format": "cidr"}
Cidr = Annotated[str, Path(max_length=64, json_schema_extra=CIDR)]
Ip = Annotated[str, Path(max_length=64, json_schema_extra={"format": "ip"})]

# A prefix shorter than these covers a large share of the Internet: one typo would
# block (or allow) the world, so it needs an explicit "confirm": true.
WIDE_PREFIX = {4: 8, 6: 32}


class BlockRequest(BaseModel):
    # Strict: `true` is not a TTL and "60" is not a number; `source` is ours to set
    # (auto-bans come from the receivers, never from a client), so it is not a field.
    model_config = ConfigDict(extra="forbid")

    cidr: str = Field(
        min_length=1, max_length=64, description="address or CIDR", json_schema_extra=CIDR
    )
    reason: str = Field("", max_length=MAX_REASON_LENGTH, pattern=r"^[^\x00-\x08\x0a-\x1f]*$")
    ttl_seconds: int | None = Field(None, ge=MIN_TTL_SECONDS, le=MAX_TTL_SECONDS)
    confirm: StrictBool = Field(False, description="needed for prefixes shorter than /8 or /32")

    @field_validator("cidr", "reason", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @field_validator("ttl_seconds", mode="before")
    @classmethod
    def _whole_seconds(cls, value: Any) -> Any:
        # JSON has one number type: 60 and 60.0 are the same integer; true and "60" are not.
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a whole number of seconds")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number of seconds")
        return int(value)


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[BlockRequest] = Field(min_length=1, max_length=MAX_BULK)


def _repository(request: Request, kind: AccessList = BLOCKLIST) -> BlocklistRepository:
    repository: BlocklistRepository = getattr(request.app.state, kind.name)
    return repository


def _actor(request: Request) -> str:
    """Who made the change, for the audit trail: the token holder, their label and address."""
    label = request.headers.get("x-floodgate-actor", "")[:MAX_ACTOR]
    label = "".join(c for c in label if c.isprintable())
    client = request.client.host if request.client else "?"
    return f"{getattr(request.state, 'actor', 'admin')}{'/' + label if label else ''}@{client}"


def _build(body: BlockRequest, actor: str, kind: AccessList = BLOCKLIST) -> Entry:
    """The entry a request body asks for; raises `InvalidEntry` saying what is wrong."""
    entry = Entry.new(
        body.cidr, reason=body.reason, source="manual", ttl_seconds=body.ttl_seconds, actor=actor
    )
    net = entry.net
    if net.prefixlen < WIDE_PREFIX[net.version] and not body.confirm:
        raise InvalidEntry(
            f"{entry.cidr} covers 2^{net.bits - net.prefixlen} addresses; "
            f'send "confirm": true to {kind.name} a prefix shorter than /{WIDE_PREFIX[net.version]}'
        )
    return entry


def _entry(body: BlockRequest, actor: str, kind: AccessList) -> Entry:
    try:
        return _build(body, actor, kind)
    except InvalidEntry as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


def access_router(kind: AccessList) -> APIRouter:
    """The admin routes of one access list."""
    router = APIRouter(tags=[Tag(kind.name)])

    @router.post(
        f"/v1/{kind.name}",
        status_code=201,
        responses={200: {"description": "an existing entry was updated"}},
        response_model=models.AddedEntry,
        response_model_exclude_unset=True,
        summary=f"Add or update one {kind.name} entry",
    )
    async def add_entry(request: Request, response: Response, body: BlockRequest) -> dict[str, Any]:
        """An address or CIDR (host bits set: 422, never widened), a reason and an optional
        `ttl_seconds`; 201 when new, 200 when it replaced an entry's reason and expiry.
        A prefix shorter than /8 (IPv4) or /32 (IPv6) needs `"confirm": true`. On the
        allowlist, the automatic bans the entry covers are lifted (listed in `lifted`)."""
        actor = _actor(request)
        stored, created = await _repository(request, kind).add(_entry(body, actor, kind), actor)
        if not created:
            response.status_code = 200
        result = stored.to_json()
        if kind.lifts_bans:
            result["lifted"] = await _lift_bans(request, [stored.cidr], actor)
        return result

    @router.post(
        f"/v1/{kind.name}/bulk",
        response_model=models.BulkResult,
        response_model_exclude_unset=True,
        summary=f"Add many {kind.name} entries at once",
    )
    async def add_bulk(request: Request, body: BulkRequest) -> dict[str, Any]:
        """Up to 10,000 entries of the single route's shape. All-or-nothing validation: one
        bad entry → 422 naming it, and nothing is written; a store failure mid-way undoes
        what was written (503)."""
        actor = _actor(request)
        entries: dict[str, Entry] = {}
        errors: list[dict[str, Any]] = []
        for position, item in enumerate(body.entries):
            try:
                entry = _build(item, actor, kind)
            except InvalidEntry as error:
                errors.append({"index": position, "cidr": item.cidr, "error": str(error)})
                continue
            entries[entry.cidr] = entry  # a later duplicate wins, as it would one by one
        if errors:
            raise HTTPException(
                status_code=422,
                detail=f"{len(errors)} invalid entries; nothing was written: "
                + "; ".join(f"#{e['index']} {e['error']}" for e in errors[:10]),
            )
        try:
            result = await _repository(request, kind).add_many(list(entries.values()), actor)
        except PyMongoError:  # undone: the store holds none of it
            raise HTTPException(
                status_code=503, detail="the store failed; nothing was written, try again"
            ) from None
        answer: dict[str, Any] = {"added": result.added, "updated": result.updated}
        if kind.lifts_bans:
            answer["lifted"] = await _lift_bans(request, list(entries), actor)
        return answer

    @router.get(
        f"/v1/{kind.name}",
        response_model=models.EntryPage,
        response_model_exclude_unset=True,
        summary=f"List {kind.name} entries",
    )
    async def list_entries(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
        after: Annotated[str | None, Query(max_length=64)] = None,
        source: Annotated[Literal["manual", "auto"] | None, Query()] = None,
    ) -> dict[str, Any]:
        """Unexpired entries in CIDR order; pass the last `cidr` as `after` for the next page."""
        entries = await _repository(request, kind).page(limit=limit, after=after, source=source)
        result: dict[str, Any] = {"entries": [e.to_json() for e in entries]}
        if len(entries) == limit:
            result["next"] = entries[-1].cidr
        return result

    @router.delete(
        f"/v1/{kind.name}",
        response_model=models.Removed,
        summary=f"Remove every {kind.name} entry of one source",
    )
    async def remove_by_source(
        request: Request,
        source: Annotated[
            Literal["manual", "auto"], Query(description="which entries: required, never all")
        ],
        older_than: Annotated[
            int, Query(ge=0, le=MAX_TTL_SECONDS, description="only entries at least this old (s)")
        ] = 0,
    ) -> dict[str, int]:
        """Remove every entry from `source` (e.g. all automatic bans after a load test)."""
        removed = await _repository(request, kind).remove_by_source(
            source, _actor(request), older_than=older_than
        )
        return {"removed": removed}

    @router.get(
        f"/v1/{kind.name}/check/{{ip}}",
        response_model=kind.check_model,
        summary=f"Is this address on the {kind.name}?",
    )
    async def check_ip(request: Request, ip: Ip) -> dict[str, Any]:
        """Whether a client address is covered, with the most specific entry covering it
        (an IPv4-mapped IPv6 address is the IPv4 address it carries); 422 if `ip` is not
        an address."""
        try:
            parse_address(ip)
        except InvalidEntry as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
        entry = await _repository(request, kind).check(ip)
        return {
            kind.verdict: entry is not None,
            "entry": None if entry is None else entry.to_json(),
        }

    @router.get(
        f"/v1/{kind.name}/{{cidr:path}}/history",
        response_model=models.History,
        summary=f"The audit trail of one {kind.name} entry",
    )
    async def entry_history(request: Request, cidr: Cidr) -> dict[str, Any]:
        """Every add, update and removal of one entry (who, when, before and after), newest
        first; kept 400 days, so it outlives the entry. URL-encode the `/` as `%2F`."""
        key = _normalize(cidr)
        history = await _repository(request, kind).history(key)
        return {"cidr": key, "history": _jsonable(history)}

    @router.get(
        f"/v1/{kind.name}/{{cidr:path}}",
        response_model=models.AccessEntry,
        summary=f"Read one {kind.name} entry",
    )
    async def get_entry(request: Request, cidr: Cidr) -> dict[str, Any]:
        """The entry for exactly this address or CIDR (normalized: `203.0.113.7` is
        `203.0.113.7/32`), or 404; to ask what covers an address, use `check`."""
        entry = await _repository(request, kind).get(_normalize(cidr))
        if entry is None:
            raise HTTPException(status_code=404, detail=f"{cidr} is not on the {kind.name}")
        return entry.to_json()

    @router.delete(
        f"/v1/{kind.name}/{{cidr:path}}", status_code=204, summary=f"Remove one {kind.name} entry"
    )
    async def remove_entry(request: Request, cidr: Cidr) -> Response:
        """Remove the entry for exactly this address or CIDR (URL-encode the `/` as `%2F`),
        audited; every receiver drops it within a second. 404 if there is none."""
        if not await _repository(request, kind).remove(_normalize(cidr), _actor(request)):
            raise HTTPException(status_code=404, detail=f"{cidr} is not on the {kind.name}")
        return Response(status_code=204)

    return router


async def _lift_bans(request: Request, networks: list[str], actor: str) -> list[str]:
    """Remove the automatic bans inside newly allowed networks; the receivers drop them
    from their copies within a change-stream round trip."""
    blocklist = _repository(request, BLOCKLIST)
    lifted: list[str] = []
    for network in networks:
        lifted += await blocklist.remove_covered(network, actor)
    return lifted


def _normalize(cidr: str) -> str:
    try:
        return normalize(cidr)
    except InvalidEntry as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


router = access_router(BLOCKLIST)
allowlist_router = access_router(ALLOWLIST)
