"""What a webhook sends: one JSON object per message, in the Standard Webhooks shape
(`type`, `timestamp`, `data`).

`data` is the message's listing entry (as `GET /v1/mailboxes/{address}/messages` gives
it), the mailbox it was registered for, its links and one-time codes as
`GET /v1/messages/{id}/links` finds them (the same extraction, in the same killable render
workers, under the same bounds), and the URL of its bytes (`/v1/messages/{id}/raw`, read
with the reader's own token: a webhook carries no credential). When the links cannot be
read within the render bounds, `links_error` says why and the lists are empty.
"""

from __future__ import annotations

import json
from typing import Any

from api.messages import summary
from mailstore.message import MessageDocument

EVENT = "message.received"
# A payload past this is sent without its links and codes (`truncated` set): links are
# bounded at 512 Ki characters already, so this is a guard, not the everyday case.
MAX_BODY = 1024 * 1024


def build(
    message: MessageDocument,
    mailboxes: list[str],
    found: dict[str, Any] | None,
    links_error: str | None,
    api_url: str,
) -> bytes:
    """The body of every attempt of this message's deliveries."""
    data: dict[str, Any] = {
        **summary(message),
        "mailboxes": mailboxes,
        "raw_url": f"{api_url}/v1/messages/{message.id}/raw",
        "message_url": f"{api_url}/v1/messages/{message.id}",
        "links": (found or {}).get("links", []),
        "codes": (found or {}).get("codes", []),
        "truncated": bool((found or {}).get("truncated", False)),
        "links_error": links_error,
    }
    document = {"type": EVENT, "timestamp": message.received_at.isoformat(), "data": data}
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_BODY:
        data.update(links=[], codes=[], truncated=True)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return body
