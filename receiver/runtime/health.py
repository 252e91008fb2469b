"""The receiver's own health endpoint: /healthz, /readyz and /metrics over plain HTTP.

The receiver is a separate process from the API (an overloaded API must not slow it), so it
answers its own probes. A deliberately tiny HTTP/1.0 responder: GET only, one request per
connection, bounded request size and time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
ReadyCheck = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves the probes for one receiver."""

    def __init__(self, registry: CollectorRegistry, ready: ReadyCheck) -> None:
        self._registry = registry
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
                status, content_type, body = self.respond(request.split(b"\r\n", 1)[0])
                head = (
                    f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("ascii") + body)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    def respond(self, request_line: bytes) -> tuple[str, str, bytes]:
        """(status line, content type, body) for one request line."""
        parts = request_line.split()
        if len(parts) != 3 or parts[0] != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        path = parts[1].split(b"?", 1)[0]
        if path == b"/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == b"/readyz":
            ok, reason = self._ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, "text/plain", reason.encode() + b"\n"
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return "404 Not Found", "text/plain", b"not found\n"
