"""A client as the door admitted it: known, judged and counted before its session starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from receiver.vocabulary import BanReason, Refused


@dataclass(frozen=True, slots=True)
class Client:
    """Who is on the other end of an admitted connection.

    `ip` is the client's own address (read from a trusted proxy's header when there is
    one), `key` what every per-client limit counts it by (receiver.door.keys), `allowed`
    whether the allowlist covers it (no rates, no auto-ban). The screen before the banner
    adds `name` (reverse DNS, for our `Received:` line; "" when none was found) and, for a
    DNS list's `enforce`, `screened`: the text every RCPT is refused with.
    """

    ip: str
    key: str
    allowed: bool = False
    name: str | None = None
    screened: str | None = None
    vouched: bool = False  # earned karma: allowlisted for caps and rates, not for bans

    @property
    def unlimited(self) -> bool:
        """No per-client rates: allowlisted, or vouched for by its own record."""
        return self.allowed or self.vouched


class HostSide(Protocol):
    """What a worker tells its host: the same calls in one process and across a channel."""

    def released(self, key: str) -> None:
        """A session of `key` ended: the door's slot is free."""

    def refused(self, key: str, reason: Refused) -> None:
        """The dialogue refused `key` something (for the host's live statistics)."""

    def stored(self, key: str, size: int) -> None:
        """A message from `key` is durable (stored or spooled)."""

    def ban(self, key: str, reason: BanReason, ttl: float) -> None:
        """The dialogue decided `key` has earned an auto-ban."""

    def vouched(self, key: str) -> None:
        """A message from `key` passed authentication (evidence toward karma)."""

    def violated(self, key: str) -> None:
        """`key` committed a protocol violation (its karma is gone)."""
