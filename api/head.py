"""HEAD wherever GET is served (RFC 9110 9.1: a server that answers GET answers HEAD).

FastAPI routes only the methods declared, so HEAD would be 405. This ASGI middleware
serves HEAD as the GET it mirrors, same status and headers (Content-Length included),
without the body; a streaming answer (live push) is told the client left once its
headers are out, so it stops at once.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = asyncio.Event()
        asked = False

        async def head_receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return await receive()
            await done.wait()
            return {"type": "http.disconnect"}

        async def head_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not done.is_set():
                done.set()
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
