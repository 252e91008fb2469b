"""The web inbox: one static page and its script and style, served by us (no CDN, no build).

The page talks to the same `/v1` API with the read token the user enters (or passes in
the URL fragment, which never reaches a server log). A public deployment
(`FLOODGATE_PUBLIC_INBOX=true`) serves the page with the read token in a `<meta>` tag, so
visitors only type a mailbox: the read token is then public by design (it can read and
delete mail, nothing else). A strict Content-Security-Policy
allows only our own script, style and API; a message's HTML is shown sanitised, in a
sandboxed frame with a CSP of its own.
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
    "inbox.css": "text/css; charset=utf-8",
    # The operator's console (admin token): receivers, live rates, top clients, bans.
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",  # shared by both pages
}
PAGES = ("index.html", "console.html")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


TOKEN_SLOT = b"<!-- read-token -->"


def install(app: FastAPI, public_token: str | None = None) -> None:
    """Serve the page; with `public_token`, the page carries it."""
    files = {name: (STATIC / name).read_bytes() for name in TYPES}
    if public_token is not None:
        meta = f'<meta name="floodgate-read-token" content="{html.escape(public_token)}">'
        files["index.html"] = files["index.html"].replace(TOKEN_SLOT, meta.encode())

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
