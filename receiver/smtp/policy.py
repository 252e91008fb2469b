"""The dialogue's judge: per-client message, recipient, mailbox and handshake rates, protocol
violations toward an auto-ban, the limits in force (stressed or not) and whether a client
was banned while connected.

The door admitted the connection and counts it (receiver.door.admission); this judges what
the client does once in. Every connection of one client reaches the same worker, so the
counts held here are exact for the host. A message or recipient rate deferral (`450`) never
counts toward a ban: a sender that honours it is compliant by definition. Violations
(improper pipelining, bare newlines, a spent error budget, a failed TLS handshake: things a
compliant client never does) do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from receiver import replies
from receiver.door.accountant import Clock, HitCounter, RateTable
from receiver.limits import Limits
from receiver.replies import Reply
from receiver.vocabulary import BanReason, Refused, Violation

BanHook = Callable[[str, BanReason, float], None]


@dataclass(frozen=True, slots=True)
class Deferral:
    """A rate said no: the reply and why (never a step toward a ban)."""

    reply: Reply
    reason: Refused


MESSAGE_RATE = Deferral(replies.MESSAGE_RATE, Refused.MESSAGE_RATE)
RECIPIENT_RATE = Deferral(replies.RECIPIENT_RATE, Refused.RECIPIENT_RATE)
MAILBOX_RATE = Deferral(replies.MAILBOX_RATE, Refused.MAILBOX_RATE)


class Policy:
    """What the sessions of one worker are judged by."""

    def __init__(
        self,
        limits: Limits,
        *,
        is_blocked: Callable[[str], bool] = lambda _ip: False,
        generation: Callable[[], int] = lambda: 0,
        clock: Clock = time.monotonic,
        on_ban: BanHook | None = None,
        on_violation: Callable[[str], None] = lambda _key: None,
    ) -> None:
        self.normal = limits
        self.stressed_limits = limits.stressed()
        self.stressed = False  # set by the door, which counts every connection of the host
        self.rates = RateTable(limits.rate_clients, clock)
        self.violations = HitCounter(limits.autoban_window, limits.rate_clients, clock)
        self._is_blocked = is_blocked
        # Bumped by every change to the blocklist: open sessions look again only then.
        self.generation = generation
        self._on_ban = on_ban
        self._on_violation = on_violation

    @property
    def limits(self) -> Limits:
        """The limits in force now: the stressed variant while under stress."""
        return self.stressed_limits if self.stressed else self.normal

    def banned(self, ip: str) -> bool:
        """Whether `ip` has been blocked since its session began."""
        return self._is_blocked(ip)

    def mail(self, key: str, allowed: bool = False) -> Deferral | None:
        """One more message from `key` (checked at MAIL FROM); allowlisted: no limit."""
        if allowed or self.rates.take("m:" + key, self.limits.message_rate):
            return None
        return MESSAGE_RATE

    def rcpt(self, key: str, allowed: bool = False) -> Deferral | None:
        """One more recipient from `key` (checked at RCPT TO); allowlisted: no limit."""
        if allowed or self.rates.take("r:" + key, self.limits.recipient_rate):
            return None
        return RECIPIENT_RATE

    def mailbox(self, mailbox: str) -> Deferral | None:
        """One more message for `mailbox`, whoever sends it (an alert loop, a flood)."""
        if self.rates.take("b:" + mailbox, self.limits.mailbox_rate):
            return None
        return MAILBOX_RATE

    def handshake(self, key: str) -> bool:
        """One more TLS handshake from `key` within its per-minute rate (STARTTLS)."""
        return self.rates.take("t:" + key, self.limits.tls_handshake_rate)

    def violation(self, key: str, reason: Violation, allowed: bool = False) -> bool:
        """Record a protocol violation by `key`; ban it once it keeps committing them.
        True if this one banned it. An allowlisted client is never banned; any client
        loses its karma."""
        self._on_violation(key)
        if allowed:
            return False
        threshold = self.normal.autoban_threshold
        if threshold <= 0 or self.violations.hit(key) < threshold:
            return False
        self.violations.forget(key)
        if self._on_ban is not None:
            self._on_ban(key, reason, self.normal.autoban_ttl)
        return True
