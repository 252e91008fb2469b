"""The API's door: the token and the body size are checked before anything reads a body.

FastAPI reads and parses a request body before it runs an endpoint's dependencies, so an
unauthenticated client could make it hold a 30 MB body (and answer 422 to malformed JSON
before 401). This pure ASGI layer runs first: a `/v1` request without a valid token is
refused with 401, and a body larger than its route allows with 413 (from Content-Length
when declared, else while it streams), without the body reaching the application.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.auth import Role, role_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY = 16 * 1024  # one entry, one small JSON object
BULK_BODY = 2 * 1024 * 1024  # a bulk add of 10,000 entries fits with room to spare


def body_limit(path: str) -> int:
    return BULK_BODY if path.endswith("/bulk") else DEFAULT_BODY


def role(scope: Scope, admin: str, reader: str | None) -> Role | None:
    """The role the request's bearer token grants, or None. (Which routes a role may use
    is decided per route, after routing, so an unknown method is 405 for everyone.)"""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return role_of(value, admin, reader)
    return None


class Gate:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: App, token: str, read_token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.read_token = read_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/v1"):
            granted = role(scope, self.token, self.read_token)
            if granted is None:
                await _refuse(
                    send, 401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"}
                )
                return

        limit = body_limit(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        body = await _read_body(receive, limit)
        if body is None:
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        await self.app(scope, _replay(body, receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` (the rest is never buffered)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then whatever comes next (a disconnect)

    return replayed


async def _refuse(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
