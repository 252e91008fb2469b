"""The door's judge: compares the accountant's counts with the limits and returns a refusal
or an admitted client.

Cheapest gate first (Postfix's postscreen): the blocklist, the caps and the connection rate
are decided from memory before any banner, handler or store work.

Auto-ban is earned by abuse, never by compliance (Postfix's anvil never bans; postscreen
bans only for protocol violations). Two counts lead to a ban, each within
`autoban_window`: *violations* (here: talking before the banner; the dialogue counts its
own, receiver.smtp.policy), and connections *refused at connect* (caps, connection rate,
a DNS list's `drop`): one per connection, with a threshold far beyond what a retrying MTA
can reach.

The ban itself has one home, the blocklist: `on_ban` applies it there at once (locally,
then shared), and `is_blocked` is the only question asked at connect, so a removal
anywhere is a removal here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from receiver import replies
from receiver.door.accountant import Accountant, Clock, HitCounter
from receiver.door.keys import client_key
from receiver.limits import Limits
from receiver.replies import Reply
from receiver.vocabulary import BanReason, Refused, Violation

# Leave stress mode only well below the threshold, so the mode does not flap.
STRESS_EXIT_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Refusal:
    """A decision to refuse: the reply to send (None: close without a word) and why."""

    reply: Reply | None
    reason: Refused


BLOCKED = Refusal(replies.BLOCKED, Refused.BLOCKED)
BLOCKED_ALLOWLISTED = Refusal(replies.BLOCKED, Refused.BLOCKED_ALLOWLISTED)
GLOBAL_CAP = Refusal(replies.TOO_MANY_CONNECTIONS, Refused.GLOBAL_CAP)
PER_IP_CAP = Refusal(replies.TOO_MANY_CONNECTIONS_FROM_IP, Refused.PER_IP_CAP)
CONNECTION_RATE = Refusal(replies.CONNECTION_RATE, Refused.CONNECTION_RATE)
SHUTTING_DOWN = Refusal(replies.SHUTTING_DOWN, Refused.SHUTTING_DOWN)
PREGREET = Refusal(replies.PREGREET, Refused.PREGREET)
WORKER_BUSY = Refusal(replies.TOO_MANY_CONNECTIONS, Refused.WORKER_BUSY)
SCREEN_BUSY = Refusal(replies.SCREEN_BUSY, Refused.SCREEN_BUSY)
PROXY_BUSY = Refusal(None, Refused.PROXY_BUSY)  # a proxy's connection: no client to tell
BAD_PROXY_HEADER = Refusal(None, Refused.BAD_PROXY_HEADER)

BanHook = Callable[[str, BanReason, float], None]
StressHook = Callable[[bool, int], None]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A connection the door counted: its client key, whether it is allowlisted, and
    whether it has earned karma (allowlisted for caps and rates, not for bans)."""

    key: str
    allowed: bool
    vouched: bool = False


class Admission:
    """The host's connections: counts, the connection rate, stress mode, refusal bans."""

    def __init__(
        self,
        limits: Limits,
        *,
        is_blocked: Callable[[str], bool] = lambda _ip: False,
        is_allowed: Callable[[str], bool] = lambda _ip: False,
        clock: Clock = time.monotonic,
        on_ban: BanHook | None = None,
        on_stress: StressHook | None = None,
        accountant: Accountant | None = None,
    ) -> None:
        self.limits = limits
        # Counting is the accountant's; this class only judges (style: anvil and smtpd).
        self.accountant = accountant or Accountant.local(
            limits.autoban_window, limits.rate_clients, clock
        )
        self.counts = self.accountant.counts
        # Authenticated messages per client (receiver.intake's evidence), toward karma.
        self.karma = HitCounter(limits.karma_window, limits.rate_clients, clock)
        self.stressed = False
        self._is_blocked = is_blocked
        self._is_allowed = is_allowed
        self._on_ban = on_ban
        self._on_stress = on_stress
        self._stress_on = limits.stress_connections
        self._stress_off = max(0, int(self._stress_on * STRESS_EXIT_FRACTION))

    def key(self, ip: str) -> str:
        return client_key(ip, self.limits.ipv6_prefix)

    def connect(
        self, ip: str, settle: Callable[[], None] | None = None
    ) -> tuple[str, Admitted | Refusal]:
        """Admit (and count) or refuse a new connection from `ip`. O(1), no I/O.

        `settle` takes in the closes not yet reported (a worker's, in another process): it
        is asked only when a cap would refuse, so a client that reconnects right after our
        `221` finds the slot its last session gave back."""
        key = self.key(ip)
        allowed = self._is_allowed(ip)
        if self._is_blocked(ip):
            return key, BLOCKED_ALLOWLISTED if allowed else BLOCKED
        vouched = not allowed and self.vouched(key)
        if settle is not None and self._at_cap(key, allowed or vouched):
            settle()
        refusal = self._caps(key, allowed or vouched)
        if refusal is not None:
            return key, refusal
        self.counts.acquire(key)
        self._update_stress()
        return key, Admitted(key, allowed, vouched)

    def vouched(self, key: str) -> bool:
        """Whether `key` has earned karma (see Limits.karma_messages)."""
        needed = self.limits.karma_messages
        return needed > 0 and self.karma.count(key) >= needed

    def vouch(self, key: str) -> None:
        """A message from `key` passed authentication: evidence of good behaviour."""
        if self.limits.karma_messages > 0:
            self.karma.hit(key)

    def forfeit(self, key: str) -> None:
        """`key` committed a violation: whatever karma it earned is gone."""
        self.karma.forget(key)

    def _at_cap(self, key: str, allowed: bool) -> bool:
        cap = (
            self.limits.allowlist_max_connections_per_ip
            if allowed
            else self.limits.max_connections_per_ip
        )
        return self.counts.total >= self.limits.max_connections or self.counts.of(key) >= cap

    def _caps(self, key: str, allowed: bool) -> Refusal | None:
        limits = self.limits
        if self.counts.total >= limits.max_connections:
            return GLOBAL_CAP
        if allowed:  # its own cap; no rate, no hit toward a ban
            if self.counts.of(key) >= limits.allowlist_max_connections_per_ip:
                return PER_IP_CAP
            return None
        if self.counts.of(key) >= limits.max_connections_per_ip:
            self.refused(key, PER_IP_CAP.reason)
            return PER_IP_CAP
        if not self.accountant.rates.take("c:" + key, limits.connection_rate):
            self.refused(key, CONNECTION_RATE.reason)
            return CONNECTION_RATE
        return None

    def release(self, key: str) -> None:
        """A connection counted under `key` has ended."""
        self.counts.release(key)
        self._update_stress()

    def violation(self, key: str, reason: Violation, allowed: bool = False) -> bool:
        """Record a protocol violation by `key` at the door; ban it once it keeps
        committing them. True if this one banned it. An allowlisted client never is."""
        self.forfeit(key)
        if allowed:
            return False
        return self._count(self.accountant.violations, self.limits.autoban_threshold, key, reason)

    def refused(self, key: str, reason: Refused) -> bool:
        """A connection refused (cap, rate, a DNS list's drop): one count toward a ban."""
        threshold = self.limits.autoban_refusal_threshold
        return self._count(self.accountant.refusals, threshold, key, reason)

    def _count(self, counter: HitCounter, threshold: int, key: str, reason: BanReason) -> bool:
        if threshold <= 0 or counter.hit(key) < threshold:
            return False
        self.accountant.violations.forget(key)
        self.accountant.refusals.forget(key)
        if self._on_ban is not None:
            self._on_ban(key, reason, self.limits.autoban_ttl)
        return True

    def _update_stress(self) -> None:
        total = self.counts.total
        if not self.stressed and total >= self._stress_on:
            self.stressed = True
        elif self.stressed and total < self._stress_off:
            self.stressed = False
        else:
            return
        if self._on_stress is not None:
            self._on_stress(self.stressed, total)
