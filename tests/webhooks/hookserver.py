"""A loopback HTTP endpoint for the webhook tests: it answers each POST as its script says
(a status, a redirect, or holding the request past the dispatcher's deadline) and keeps
what it received."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HOLD = "hold"  # keep the request unanswered until released (a timeout, or a kill)
LATE = "late"  # answer 200 once released (an attempt in flight for as long as a test likes)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HookServer:
    """`script`: what to answer, one entry per request in turn (an HTTP status, HOLD or LATE);
    past its end, `then`."""

    script: list[int | str] = field(default_factory=list)
    then: int | str = 200
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    name: str = "localhost"

    def answer(self) -> int | str:
        return self.script.pop(0) if self.script else self.then

    @property
    def url(self) -> str:
        # On loopback a name, not an address: the API takes it without allowing private
        # literals, and the dispatcher resolves it (from /etc/hosts) and checks what it got.
        return f"http://{self.name}:{self.port}/hook"

    def wait(self, count: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return True
            time.sleep(0.02)
        return False


@contextmanager
def hook_server(
    script: list[int | str],
    then: int | str = 200,
    *,
    address: str = "127.0.0.1",
    inside: Callable[[Callable[[], http.server.ThreadingHTTPServer]], Any] | None = None,
) -> Iterator[HookServer]:
    """The endpoint on `address` (named `localhost` on loopback); `inside` makes its socket
    elsewhere (a fleet host's `call`: the socket is then in that host's network)."""
    hook = HookServer(list(script), then, name="localhost" if address == "127.0.0.1" else address)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            hook.received.append(Received(time.monotonic(), self.path, headers, body))
            answer = hook.answer()
            if answer in (HOLD, LATE):
                hook.release.wait(30)
                if answer == HOLD:
                    return
                answer = 200
            assert isinstance(answer, int)
            self.send_response(answer)
            if 300 <= answer < 400:
                self.send_header("Location", f"http://{hook.name}:{hook.port}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    def make() -> http.server.ThreadingHTTPServer:
        return http.server.ThreadingHTTPServer((address, 0), Handler)

    server: http.server.ThreadingHTTPServer = inside(make) if inside is not None else make()
    server.daemon_threads = True
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
