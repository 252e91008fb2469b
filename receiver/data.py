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
    """The received body: unstuffed bytes, or `too_big` with what was counted."""

    content: bytes
    received: int
    too_big: bool


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
) -> Body:
    """Read up to and including the end marker; see the module docstring.

    `on_progress(total_bytes)` is called after each read, for deadlines and rates.
    """
    parts: list[bytes] = []
    kept = 0
    received = 0
    too_big = False

    def keep(chunk: bytes) -> None:
        nonlocal kept, received, too_big
        if not chunk:
            return
        received += len(chunk)
        if not too_big and received > limit:
            too_big = True
            parts.clear()  # free memory now; the rest is only counted
        if not too_big:
            parts.append(chunk)
            kept += len(chunk)
        on_progress(received)

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
            return _finish(parts, received, too_big)
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
        return _finish(parts, received, too_big)


def _finish(parts: list[bytes], received: int, too_big: bool) -> Body:
    if too_big:
        return Body(b"", received, True)
    return Body(unstuff(b"".join(parts)), received, False)


def unstuff(data: bytes) -> bytes:
    """Remove the transparency dot: a line starting with '.' loses it (RFC 5321 4.5.2)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")
