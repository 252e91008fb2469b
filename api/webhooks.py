"""Webhook admin endpoints: register a URL for an address, a domain or every message, list
and remove them, enable one again, and see its recent deliveries. They only write to the
store: the dispatcher (`floodgate webhooks`) reads the endpoints again before it looks at
messages stored after its last read, so a registration counts for every message stored
after its `201`.

The secret (`whsec_...`, Standard Webhooks) is made here and shown once, in the answer
to the registration; it is never listed.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from api import models
from api.docs import Tag
from mailstore.addresses import canonical_mailbox
from mailstore.webhooks import WebhookStore
from webhooks import destination, signing
from webhooks.limits import WebhookLimits

router = APIRouter(tags=[Tag.WEBHOOKS])

ID_PATTERN = r"^wh_[0-9a-f]{16}$"
URL_FORMAT: dict[str, JsonValue] = {"format": "webhook-url"}
MATCH_FORMAT: dict[str, JsonValue] = {"format": "webhook-match"}
WebhookId = Annotated[str, Path(pattern=ID_PATTERN, json_schema_extra={"format": "webhook-id"})]
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# Labels joined by dots (RFC 1035 2.3.1, digits first allowed as RFC 1123 2.1 does).
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")
MAX_DELIVERIES = 500


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8,
        max_length=destination.MAX_URL,
        description="http:// or https:// URL the messages are POSTed to",
        json_schema_extra=URL_FORMAT,
    )
    match: str | None = Field(
        None,
        min_length=1,
        max_length=320,
        description="an address (`someone@mx.test`), a domain (`mx.test`), or omitted for "
        "every message",
        json_schema_extra=MATCH_FORMAT,
    )


class Webhook(models.Model):
    id: str
    url: str
    match: str | None = Field(description="the address or domain; null: every message")
    created_at: str
    disabled: bool
    disabled_reason: str | None = None
    failures: int = Field(description="failed attempts in a row, since the last success")
    last_error: str | None = None
    last_success_at: str | None = None
    last_failure_at: str | None = None


class CreatedWebhook(Webhook):
    secret: str = Field(description="`whsec_...`: verify signatures with it; shown only now")


class WebhookList(models.Model):
    webhooks: list[Webhook]


class Delivery(models.Model):
    id: str = Field(description="the `webhook-id` every attempt of it sends")
    message_id: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(None, description="the last answer's HTTP status")
    last_error: str | None = None
    created_at: str
    next_attempt_at: str | None = None
    delivered_at: str | None = None


class DeliveryList(models.Model):
    deliveries: list[Delivery]


def _iso(value: object) -> str | None:
    if not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC).isoformat()


def _public(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": document["_id"],
        "url": document["url"],
        "match": document.get("match") or None,
        "created_at": _iso(document.get("created_at")) or "",
        "disabled": bool(document.get("disabled", False)),
        "disabled_reason": document.get("disabled_reason"),
        "failures": int(document.get("failures", 0)),
        "last_error": document.get("last_error"),
        "last_success_at": _iso(document.get("last_success_at")),
        "last_failure_at": _iso(document.get("last_failure_at")),
    }


def _delivery(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": document["_id"],
        "message_id": document["message_id"],
        "state": document.get("state", "pending"),
        "attempts": int(document.get("attempts", 0)),
        "last_status": document.get("last_status"),
        "last_error": document.get("last_error"),
        "created_at": _iso(document.get("created_at")) or "",
        "next_attempt_at": _iso(document.get("due")),
        "delivered_at": _iso(document.get("delivered_at")),
    }


def match_of(text: str | None) -> str:
    """The stored form of what an endpoint matches ("" for every message), or 422."""
    if text is None:
        return ""
    if "@" in text:
        mailbox = canonical_mailbox(text)
        if mailbox is None:
            raise HTTPException(status_code=422, detail=f"match: {text!r} is not an address")
        return mailbox
    domain = text.lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise HTTPException(status_code=422, detail=f"match: {text!r} is not a domain name")
    return domain


def _hooks(request: Request) -> WebhookStore:
    hooks: WebhookStore = request.app.state.webhooks
    return hooks


def _limits(request: Request) -> WebhookLimits:
    limits: WebhookLimits = request.app.state.webhook_limits
    return limits


async def _found(request: Request, webhook_id: str) -> dict[str, Any]:
    found = await _hooks(request).endpoint(webhook_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no webhook {webhook_id}")
    return found


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=CreatedWebhook,
    responses={409: {"model": models.ErrorBody, "description": "too many webhooks registered"}},
    summary="Register a webhook",
)
async def add_webhook(request: Request, body: WebhookRequest) -> dict[str, Any]:
    """A URL (http or https, no user information or fragment; an address literal must be
    public unless `FLOODGATE_WEBHOOK_ALLOW_PRIVATE`) that every new message of `match`
    (an address, a domain, or omitted: every message) is POSTed to, signed with the
    secret in this answer (Standard Webhooks). 409 past `FLOODGATE_WEBHOOK_MAX_ENDPOINTS`."""
    limits = _limits(request)
    try:
        destination.check_registration(body.url, limits.allow_private)
    except destination.Refused as error:
        raise HTTPException(status_code=422, detail=f"url: {error}") from None
    document = {
        "_id": "wh_" + secrets.token_hex(8),
        "url": body.url,
        "match": match_of(body.match),
        "secret": signing.new_secret(),
        "created_at": time.time(),
        "disabled": False,
        "failures": 0,
    }
    if not await _hooks(request).add_endpoint(document, limits.webhook_max_endpoints):
        raise HTTPException(
            status_code=409,
            detail=f"{limits.webhook_max_endpoints} webhooks are registered already; "
            "remove one first",
        )
    return {**_public(document), "secret": document["secret"]}


@router.get("/v1/webhooks", response_model=WebhookList, summary="List the webhooks")
async def list_webhooks(request: Request) -> dict[str, Any]:
    """Every registered webhook with its health (failures in a row, last error, disabled
    and why), oldest id first; never the secrets."""
    found = await _hooks(request).endpoints_page(_limits(request).webhook_max_endpoints)
    return {"webhooks": [_public(document) for document in found]}


@router.get("/v1/webhooks/{webhook_id}", response_model=Webhook, summary="One webhook")
async def get_webhook(request: Request, webhook_id: WebhookId) -> dict[str, Any]:
    """The webhook and its health; 404 if there is no such webhook."""
    return _public(await _found(request, webhook_id))


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a webhook",
)
async def delete_webhook(request: Request, webhook_id: WebhookId) -> Response:
    """The webhook and its deliveries (pending ones are not sent); 404 if unknown."""
    if not await _hooks(request).remove_endpoint(webhook_id):
        raise HTTPException(status_code=404, detail=f"no webhook {webhook_id}")
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/enable",
    response_model=Webhook,
    summary="Enable a disabled webhook again",
)
async def enable_webhook(request: Request, webhook_id: WebhookId) -> dict[str, Any]:
    """A webhook disabled after failing too long gets new messages again, its failure
    count cleared (deliveries failed meanwhile stay failed); 404 if unknown."""
    found = await _hooks(request).enable(webhook_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no webhook {webhook_id}")
    return _public(found)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    summary="A webhook's recent deliveries",
)
async def list_deliveries(
    request: Request,
    webhook_id: WebhookId,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES)] = 50,
) -> dict[str, Any]:
    """Its deliveries, newest first: state (pending, delivered, failed), attempts, the
    last status and error, when the next attempt is due; 404 if unknown."""
    await _found(request, webhook_id)
    found = await _hooks(request).recent(webhook_id, limit)
    return {"deliveries": [_delivery(document) for document in found]}
