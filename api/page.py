"""The web inbox: one static page and its script and style, served by us (no CDN, no build).

The page talks to the same `/v1` API with the token the user enters (or passes in the URL
fragment, which never reaches a server log). So that it can explain itself, the page
carries, in `<meta>` tags, the domains we receive for and which token opens a mailbox here
(the read token if one is configured, else the admin token): facts, never a secret. A
public deployment
(`FLOODGATE_PUBLIC_INBOX=true`) serves the page with the read token in a `<meta>` tag, so
visitors only type a mailbox: the read token is then public by design (it can read and
delete mail, nothing else). A strict Content-Security-Policy
allows only our own script, style and API; a message's HTML is shown sanitised, in a
sandboxed frame with a CSP of its own that blocks remote images until the reader asks for
them (the page's `img-src` lets https and http images through, and its `style-src` inline
styles, only so that the frame's own policy, which the frame inherits alongside the
page's, can be the one that decides).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

STATIC = Path(__file__).parent / "static"
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "inbox.js": "text/javascript; charset=utf-8",
    "message.js": "text/javascript; charset=utf-8",  # the open message: its tabs
    "inbox.css": "text/css; charset=utf-8",
    # The operator's console (admin token): receivers, live rates, top clients, bans.
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",  # shared by both pages
}
PAGES = ("index.html", "console.html")
# `style-src 'unsafe-inline'`: the message's frame (srcdoc) is held to this policy as well
# as its own, and mail is styled inline. The page itself never puts markup of a message in
# its own document (text only), and no script but ours runs anywhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; "
    "img-src 'self' data: https: http:; frame-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


TOKEN_SLOT = b"<!-- read-token -->"
CONFIG_SLOT = b"<!-- inbox-config -->"


def _meta(name: str, content: str) -> str:
    return f'<meta name="{name}" content="{html.escape(content)}">'


def install(
    app: FastAPI,
    public_token: str | None = None,
    *,
    domains: tuple[str, ...] = (),
    read_token_configured: bool = False,
) -> None:
    """Serve the page; with `public_token`, the page carries it. `domains` and which token
    works (`read_token_configured`) let the page say what to type."""
    files = {name: (STATIC / name).read_bytes() for name in TYPES}
    inbox = files["index.html"]
    if public_token is not None:
        inbox = inbox.replace(TOKEN_SLOT, _meta("floodgate-read-token", public_token).encode())
    config = _meta("floodgate-domains", ",".join(domains)) + _meta(
        "floodgate-token-kind", "read" if read_token_configured else "admin"
    )
    files["index.html"] = inbox.replace(CONFIG_SLOT, config.encode())

    def serve(name: str) -> Response:
        return Response(files[name], media_type=TYPES[name], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return serve("index.html")

    @app.get("/console", include_in_schema=False)
    async def console() -> Response:
        return serve("console.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in files or name in PAGES:
            raise HTTPException(status_code=404, detail="not found")
        return serve(name)
