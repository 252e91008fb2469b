"""Reading a message body after DATA: byte-counted, bounded, fast, and exact.

Unlike aiosmtpd's line-by-line reader, lines longer than 1000 octets do not reject the
message (real mail has them; the limit is a SHOULD for senders, RFC 5321 4.5.3.1.6), and the
body is read in large chunks up to the end-of-data marker instead of one line at a time.
Past the size limit nothing more is kept, but the stream is drained to the final dot so
the reply (552) lands in sync with the client (RFC 5321 4.2.5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

END = b"\r\n.\r\n"  # end-of-data: CRLF, a lone dot, CRLF (RFC 5321 4.1.1.4)


@dataclass(frozen=True, slots=True)
class Body:
    """The received body: unstuffed bytes, or why it was not kept.

    `reserved` bytes of the shared budget stay taken until the caller releases them
    (after the store answers); a body that was not kept holds none.
    """

    content: bytes
    received: int
    too_big: bool
    no_memory: bool = False
    reserved: int = 0


class MemoryBudget:
    """Bytes of message data all sessions together may hold in memory.

    Each session is capped at the message size limit; this caps their sum, so ten
    thousand clients in DATA at once cannot exhaust the host.
    """

    __slots__ = ("available", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.available = limit

    def take(self, amount: int) -> bool:
        if amount > self.available:
            return False
        self.available -= amount
        return True

    def give(self, amount: int) -> None:
        self.available = min(self.limit, self.available + amount)

    @property
    def used(self) -> int:
        return self.limit - self.available


def _pending_prefix(tail: bytes) -> int:
    """Length of the longest suffix of `tail` that starts the end marker (0..4)."""
    for length in (4, 3, 2, 1):
        if tail[-length:] == END[:length]:
            return length
    return 0


async def read_body(
    reader: asyncio.StreamReader,
    limit: int,
    on_progress: Callable[[int], None],
    budget: MemoryBudget | None = None,
) -> Body:
    """Read up to and including the end marker; see the module docstring.

    `on_progress(total_bytes)` is called after each read, for deadlines and rates.
    """
    budget = budget or MemoryBudget(limit)
    state = _Reading(limit, budget, on_progress)
    try:
        return await _read(reader, state)
    except BaseException:
        state.drop()  # the client vanished mid-DATA: give the memory back
        raise


class _Reading:
    """What has been kept so far, and whether it still can be."""

    __slots__ = (
        "budget",
        "kept",
        "limit",
        "no_memory",
        "on_progress",
        "parts",
        "received",
        "too_big",
    )

    def __init__(
        self, limit: int, budget: MemoryBudget, on_progress: Callable[[int], None]
    ) -> None:
        self.limit = limit
        self.budget = budget
        self.on_progress = on_progress
        self.parts: list[bytes] = []
        self.kept = 0
        self.received = 0
        self.too_big = False
        self.no_memory = False

    def keep(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.received += len(chunk)
        if not self.too_big and self.received > self.limit:
            self.too_big = True
            self.drop()  # free memory now; the rest is only counted
        elif not (self.too_big or self.no_memory):
            if self.budget.take(len(chunk)):
                self.parts.append(chunk)
                self.kept += len(chunk)
            else:
                self.no_memory = True
                self.drop()
        self.on_progress(self.received)

    def drop(self) -> None:
        self.parts.clear()
        self.budget.give(self.kept)
        self.kept = 0

    def finish(self) -> Body:
        if self.too_big or self.no_memory:
            return Body(b"", self.received, self.too_big, self.no_memory)
        return Body(unstuff(b"".join(self.parts)), self.received, False, False, self.kept)


async def _read(reader: asyncio.StreamReader, state: _Reading) -> Body:
    keep = state.keep

    # The CRLF that ended the DATA command line starts the first line, so the body may end
    # right away (".\r\n"). While the bytes read so far end in a partial end marker, read
    # just enough to tell whether it completes (never past it: the next command may follow),
    # holding those bytes back; readuntil() below cannot see a marker split across reads.
    held = b"\r\n"  # the DATA line's CRLF: part of the stream, not of the content
    virtual = len(held)
    while held:
        window = held + await reader.readexactly(len(END) - len(held))
        end = window.find(END)
        if end >= 0:
            keep(window[virtual : end + 2])
            return state.finish()
        pending = _pending_prefix(window)
        keep(window[virtual : len(window) - pending])
        held, virtual = window[len(window) - pending :], 0
    while True:
        try:
            chunk = await reader.readuntil(END)
        except asyncio.LimitOverrunError as overrun:
            # No marker within the reader's buffer limit: take what is safe to consume
            # (the reader keeps the last bytes, which could start a marker) and go on.
            keep(await reader.readexactly(overrun.consumed))
            continue
        keep(chunk[:-3])
        return state.finish()


def unstuff(data: bytes) -> bytes:
    """Remove the transparency dot: a line starting with '.' loses it (RFC 5321 4.5.2)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")
