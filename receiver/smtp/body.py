"""Reading a message body after DATA: fed as bytes arrive, byte-counted, bounded, exact.

Only `CRLF . CRLF` ends the body (RFC 5321 4.1.1.4); no lenient variant does, so a message
can never be split here. Lines longer than 1000 octets are kept (real mail has them; the
limit is a SHOULD for senders, RFC 5321 4.5.3.1.6). Past the size limit or the shared
memory budget nothing more is kept, but the stream is read to the final dot so the reply
lands in step with the client (RFC 5321 4.2.5).

A bare CR or LF (outside CRLF) or a NUL in the content is what SMTP smuggling builds on: a
more lenient server further on may read it as a line end. `BareNewline` says what to do:
refuse the message (the default), normalise it to CRLF (and drop NULs), or keep it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

END = b"\r\n.\r\n"  # end-of-data: CRLF, a lone dot, CRLF (RFC 5321 4.1.1.4)
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


class BareNewline(enum.StrEnum):
    """What to do with a bare CR, bare LF or NUL in message content."""

    REJECT = "reject"
    NORMALIZE = "normalize"
    ACCEPT = "accept"


class Outcome(enum.Enum):
    KEPT = "kept"
    TOO_BIG = "too_big"
    NO_MEMORY = "no_memory"
    BARE_NEWLINE = "bare_newline"


@dataclass(frozen=True, slots=True)
class Body:
    """The received body: unstuffed bytes, or why it was not kept.

    `reserved` bytes of the shared budget stay taken until the caller gives them back
    (after the store answers); a body that was not kept holds none.
    """

    content: bytes
    received: int
    outcome: Outcome
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


class BodyReader:
    """Consumes a body fed chunk by chunk; `feed` says where the body ended, if it did."""

    __slots__ = (
        "_bare",
        "_budget",
        "_held",
        "_kept",
        "_last",
        "_limit",
        "_mode",
        "_parts",
        "_virtual",
        "outcome",
        "received",
    )

    def __init__(self, limit: int, budget: MemoryBudget, mode: BareNewline) -> None:
        self._limit = limit
        self._budget = budget
        self._mode = mode
        self._parts: list[bytes] = []
        self._kept = 0
        # The CRLF that ended the DATA line starts the first line, so the body may end
        # at once (".\r\n"). It is part of the stream, not of the content.
        self._held = b"\r\n"
        self._virtual = 2
        self._last = 0x0A  # the byte before the content: the DATA line's LF
        self._bare = False
        self.received = 0
        self.outcome = Outcome.KEPT

    @property
    def refused(self) -> bool:
        """True once the message is known to be refused (a reply can go out now)."""
        return self.outcome is Outcome.BARE_NEWLINE

    def feed(self, data: bytes) -> int:
        """Take `data`; return how many of its bytes the body used (ending with the final
        dot's CRLF), or -1 if the body has not ended: all of it was used."""
        window = self._held + data
        end = window.find(END)
        if end >= 0:
            self._commit(window, end + 2)
            return end + len(END) - len(self._held)
        safe = len(window) - _marker_prefix(window)
        self._commit(window, safe)
        self._held = window[safe:]
        return -1

    def _commit(self, window: bytes, upto: int) -> None:
        start = self._virtual
        self._virtual = max(0, self._virtual - upto)
        if upto <= start:
            return
        chunk = window[start:upto]
        self.received += len(chunk)
        if self._mode is not BareNewline.ACCEPT and not self._bare:
            self._bare = _has_bare(self._last, chunk)
            if self._bare and self._mode is BareNewline.REJECT:
                self._refuse(Outcome.BARE_NEWLINE)
        self._last = chunk[-1]
        if self.outcome is not Outcome.KEPT:
            return
        if self.received > self._limit:
            self._refuse(Outcome.TOO_BIG)
        elif self._budget.take(len(chunk)):
            self._parts.append(chunk)
            self._kept += len(chunk)
        else:
            self._refuse(Outcome.NO_MEMORY)

    def _refuse(self, outcome: Outcome) -> None:
        if self.outcome is Outcome.KEPT:
            self.outcome = outcome
        self.drop()

    def drop(self) -> None:
        """Give back the memory held (the client went away, or the body was refused)."""
        self._parts.clear()
        self._budget.give(self._kept)
        self._kept = 0

    def finish(self) -> Body:
        """The body, once `feed` reported its end."""
        if self.outcome is not Outcome.KEPT:
            return Body(b"", self.received, self.outcome)
        content = b"".join(self._parts)
        self._parts.clear()
        if self._bare:  # only in NORMALIZE mode: REJECT refused, ACCEPT never looks
            content = _LINE_ENDS.sub(b"\r\n", content.replace(b"\x00", b""))
            if len(content) > self._limit:
                self._budget.give(self._kept)
                return Body(b"", self.received, Outcome.TOO_BIG)
        return Body(unstuff(content), self.received, Outcome.KEPT, self._kept)


def _marker_prefix(window: bytes) -> int:
    """Length of the longest suffix of `window` that starts the end marker (0..4)."""
    for length in (4, 3, 2, 1):
        if window.endswith(END[:length]):
            return length
    return 0


def _has_bare(before: int, chunk: bytes) -> bool:
    """Whether `chunk`, preceded by the byte `before`, holds a bare CR, bare LF or NUL.

    Counting in C: every LF must follow a CR and every CR must precede an LF. A CR at
    the very end is judged with the next chunk (the reader holds back a trailing CR
    as a possible start of the end marker, so it is never committed alone, except at
    the end of the body, where the marker's CRLF follows it).
    """
    crlf = chunk.count(b"\r\n")
    lf = chunk.count(b"\n")
    cr = chunk.count(b"\r")
    joined = 1 if before == 0x0D and chunk[0] == 0x0A else 0
    trailing = 1 if chunk[-1] == 0x0D else 0
    if before == 0x0D and not joined:
        return True  # the previous chunk's trailing CR was bare
    return lf != crlf + joined or cr != crlf + trailing or b"\x00" in chunk


def unstuff(data: bytes) -> bytes:
    """Remove the transparency dot: a line starting with '.' loses it (RFC 5321 4.5.2)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")
