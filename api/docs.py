"""`/docs`: Swagger UI from assets we serve ourselves, so it works with no Internet access
(FastAPI's default pulls them from a CDN). The assets come from the `fastapi-swagger`
package, read once at start-up. The page has a Content-Security-Policy of its own: only our
assets, its one inline script by hash, and no framing (`frame-ancestors 'none'`).

Also the words of the OpenAPI document that are not a route's own: its description (what
the two tokens may do) and its groups (`Tag`), in the order `/docs` shows them."""

from __future__ import annotations

import base64
import hashlib
import re
from enum import StrEnum
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response


class Tag(StrEnum):
    """The groups of operations, as `/docs` shows them (every route names one)."""

    MAILBOXES = "mailboxes"
    MESSAGES = "messages"
    BLOCKLIST = "blocklist"
    ALLOWLIST = "allowlist"
    STATS = "stats"
    HEALTH = "health"


TAGS: list[dict[str, Any]] = [
    {
        "name": Tag.MAILBOXES,
        "description": "A mailbox's messages: list and search them, follow new ones live, wait for "
        "the next one that matches (with its links and codes), empty it. Any "
        "address at our domains is a mailbox; it is compared case-insensitively. Admin or "
        "read token.",
    },
    {
        "name": Tag.MESSAGES,
        "description": "One message: parsed for display, its links and one-time codes, an "
        "attachment, its bytes as received; delete it. Parsing runs in killable worker "
        "processes under the render bounds. Admin or read token.",
    },
    {
        "name": Tag.BLOCKLIST,
        "description": "Clients refused before the SMTP greeting (`554 5.7.1`): addresses "
        "and networks, manual entries and automatic bans, each change audited. Receivers "
        "enforce their own copy, synced from the store within a second. Admin token.",
    },
    {
        "name": Tag.ALLOWLIST,
        "description": "Clients exempt from rate limits and automatic bans (the big senders "
        "of verification mail); content limits still apply and a blocklist entry still "
        "wins. The blocklist's shapes. Admin token.",
    },
    {
        "name": Tag.STATS,
        "description": "Who is at the door right now: every live receiver's statistics, "
        "merged, with the blocklist state of each client named. Admin token.",
    },
    {
        "name": Tag.HEALTH,
        "description": "For probes and scrapers, no token: liveness, readiness with its "
        "reason, Prometheus metrics, and the MTA-STS policy when one is configured.",
    },
]

DESCRIPTION = """\
Read the mail that arrived for any address at our domains, and manage the access lists the
receivers enforce.

**Tokens.** Every `/v1` route needs `Authorization: Bearer <token>` (a missing or wrong
one: `401`). There are two, and each operation lists which it takes (the **Authorize**
button below holds either):

- **admin token** (`adminToken`): `FLOODGATE_ADMIN_TOKEN`; when it is unset, `floodgate
  run` makes one, prints it and writes it to `var/admin-token`. Every route. With it a
  message also shows its envelope (`MAIL FROM` and every `RCPT TO`, so Bcc recipients),
  the client's address and its HELO.
- **read token** (`readToken`): `FLOODGATE_READ_TOKEN`, optional (unset: no read token).
  For a reader front end such as the web inbox: reads mailboxes and messages (links,
  attachments and raw bytes included) and deletes them, and sees only what the sender
  wrote (no envelope, so no Bcc). The blocklist, allowlist and stats routes answer it `403`.

**Errors** are JSON `{"error": "one sentence"}` (a `422` adds `details` per field). The
pages (`/`, `/console`, `/docs`) and the `health` routes need no token.
"""

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
PREFIX = "/docs/assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def policy(page: bytes) -> str:
    """The page's CSP: its inline scripts allowed by hash (CSP3 'sha256-...'), nothing else
    inline but style attributes (Swagger UI sets some as it renders)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page.decode())
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def install(app: FastAPI) -> None:
    package = resources.files("fastapi_swagger") / "resources"
    files = {name: (package / name).read_bytes() for name in ASSETS}

    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": False},
    ).body
    headers = {
        "Content-Security-Policy": policy(bytes(page)),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get(PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in files:
            raise HTTPException(status_code=404, detail="not found")
        return Response(
            files[name],
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )
