"""Children that answer requests over their pipes: the killable workers for work whose cost a
sender controls (rendering a message, verifying its signatures).

A message, either way, is a JSON head and a binary body, each a frame of a 4-octet
big-endian length and its bytes. A child says `{"ready": true}` once it has imported what it
needs, and then answers each request in order; requests may be pipelined (sent before the
previous answer came), so a child woken once works through every request queued meanwhile.
The parent kills a child whose answer is late: the work really stops, which a thread's
cannot. `read_message` and `write_message` are the child's side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any, BinaryIO, cast

Message = tuple[dict[str, Any], bytes]
REAP_WITHIN = 5.0  # seconds a killed child is waited for
MAX_HEAD = 1 << 20  # a head is a small JSON object; anything longer is a broken child


class ProcessGone(Exception):
    """The child exited, or broke its framing: its pending requests fail with this."""


class _Pipe(asyncio.SubprocessProtocol):
    """The child's stdout, cut into messages; each answers the oldest request pending."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.pending: collections.deque[tuple[asyncio.Future[Message], float]] = collections.deque()
        self.exited = False
        self.gone = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        while self.pending:
            try:
                message = _take(self.buffer)
            except (ProcessGone, ValueError):  # broken framing: nothing after it is trusted
                self.process_exited()
                return
            if message is None:
                return
            future, _ = self.pending.popleft()
            if not future.done():  # a caller past its deadline: nobody to tell
                future.set_result(message)

    def process_exited(self) -> None:
        self.exited = True
        self.gone.set()
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(ProcessGone("the child exited"))


def _take(buffer: bytearray) -> Message | None:
    """One whole message from the front of `buffer` (removed), or None if incomplete."""
    if len(buffer) < 4:
        return None
    size = int.from_bytes(buffer[:4], "big")
    if size > MAX_HEAD:
        raise ProcessGone("a head longer than any request's")
    if len(buffer) < 8 + size:
        return None
    body_size = int.from_bytes(buffer[4 + size : 8 + size], "big")
    end = 8 + size + body_size
    if len(buffer) < end:
        return None
    head = json.loads(buffer[4 : 4 + size])
    body = bytes(buffer[8 + size : end])
    del buffer[:end]
    if not isinstance(head, dict):
        raise ProcessGone("a head that is not an object")
    return head, body


class FramedChild:
    """One child process answering framed requests (see the module docstring)."""

    def __init__(self, transport: asyncio.SubprocessTransport, pipe: _Pipe) -> None:
        self.transport = transport
        self.pipe = pipe

    @classmethod
    async def start(cls, command: Sequence[str], ready_within: float = 60.0) -> FramedChild:
        """Spawn `command` and wait for its ready message; raise ProcessGone if it dies
        or says nothing in time."""
        loop = asyncio.get_running_loop()
        transport, pipe = await loop.subprocess_exec(_Pipe, *command, stderr=None)
        child = cls(transport, pipe)
        try:
            async with asyncio.timeout(ready_within):
                head, _ = await child._expect()
            if head.get("ready") is not True:
                raise ProcessGone("the child did not say it was ready")
        except BaseException:
            child.kill()
            with contextlib.suppress(BaseException):  # reaped, even by a cancelled caller
                await asyncio.wait_for(asyncio.shield(child.wait()), REAP_WITHIN)
            raise
        return child

    @property
    def pid(self) -> int:
        return self.transport.get_pid()

    @property
    def load(self) -> int:
        """Requests sent and not yet answered."""
        return len(self.pipe.pending)

    def oldest(self) -> float:
        """Since when the oldest request in flight is out (inf: none)."""
        return self.pipe.pending[0][1] if self.pipe.pending else float("inf")

    @property
    def alive(self) -> bool:
        return not self.pipe.exited

    def _expect(self) -> asyncio.Future[Message]:
        if self.pipe.exited:
            raise ProcessGone("the child exited")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pipe.pending.append((future, time.monotonic()))
        return future

    async def ask(self, head: dict[str, Any], body: bytes = b"") -> Message:
        """Send one request; its answer once the child has answered every earlier one.
        Raises ProcessGone if the child dies first; a caller's deadline is its own."""
        answer = self._expect()
        # uvloop's pipe transports are write transports without asyncio's base classes.
        stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))
        stdin.write(frames(head, body))
        return await answer

    def kill(self) -> None:
        """At once: the work stops, pending requests fail with ProcessGone."""
        with contextlib.suppress(ProcessLookupError):
            self.transport.kill()
        self.transport.close()

    async def wait(self) -> None:
        await self.pipe.gone.wait()


def frames(head: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(head).encode()
    return len(encoded).to_bytes(4, "big") + encoded + len(body).to_bytes(4, "big") + body


# --- the child's side ---------------------------------------------------------------


def write_message(stream: BinaryIO, head: dict[str, Any], body: bytes = b"") -> None:
    stream.write(frames(head, body))
    stream.flush()


def read_message(stream: BinaryIO) -> Message | None:
    """The next request, or None at the end of input (the parent closed the pipe)."""
    size = stream.read(4)
    if len(size) < 4:
        return None
    head = json.loads(stream.read(int.from_bytes(size, "big")))
    body_size = stream.read(4)
    if len(body_size) < 4:
        return None
    return head, stream.read(int.from_bytes(body_size, "big"))
