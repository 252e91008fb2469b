"""The judge: compares the accountant's counts with the limits and returns a refusal or nothing.

Cheapest gate first (Postfix's postscreen): at connect the blocklist, the caps and the
connection rate are decided from memory before any banner, handler or store work.

Auto-ban is earned by abuse, never by compliance (Postfix's anvil never bans; postscreen
bans only for protocol violations). Two counts lead to a ban, each within
`autoban_window`: *violations* (pregreet, improper pipelining, bare newlines, a spent error
budget, a failed TLS handshake: things a compliant client never does), and connections
*refused at connect* (cap, connection rate): one per connection, with a threshold far
beyond what a retrying MTA can reach. A message or recipient rate deferral (450) never
counts: a sender that honours it is compliant by definition.

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

# Leave stress mode only well below the threshold, so the mode does not flap.
STRESS_EXIT_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Refusal:
    """A decision to refuse: the reply to send and a reason from a bounded vocabulary."""

    reply: Reply
    reason: str


BLOCKED = Refusal(replies.BLOCKED, "blocked")
# Blocked although allowlisted: the explicit blocklist entry wins, and the overlap is
# counted under its own name so an operator sees it in the summary lines.
BLOCKED_ALLOWLISTED = Refusal(replies.BLOCKED, "blocked_allowlisted")
GLOBAL_CAP = Refusal(replies.TOO_MANY_CONNECTIONS, "global_cap")
PER_IP_CAP = Refusal(replies.TOO_MANY_CONNECTIONS_FROM_IP, "per_ip_cap")
CONNECTION_RATE = Refusal(replies.CONNECTION_RATE, "connection_rate")
MESSAGE_RATE = Refusal(replies.MESSAGE_RATE, "message_rate")
RECIPIENT_RATE = Refusal(replies.RECIPIENT_RATE, "recipient_rate")
MAILBOX_RATE = Refusal(replies.MAILBOX_RATE, "mailbox_rate")

BanHook = Callable[[str, str, float], None]
StressHook = Callable[[bool, int], None]


class Admission:
    """Per-receiver admission state: counts, rates, stress mode and local bans."""

    def __init__(
        self,
        limits: Limits,
        *,
        is_blocked: Callable[[str], bool] = lambda _ip: False,
        is_allowed: Callable[[str], bool] = lambda _ip: False,
        generation: Callable[[], int] = lambda: 0,
        clock: Clock = time.monotonic,
        on_ban: BanHook | None = None,
        on_stress: StressHook | None = None,
        accountant: Accountant | None = None,
        local_stress: bool = True,
    ) -> None:
        self.normal = limits
        self.stressed_limits = limits.stressed()
        # Counting is the accountant's; this class only judges (style: anvil and smtpd).
        self.accountant = accountant or Accountant.local(
            limits.autoban_window, limits.rate_clients, clock
        )
        self.counts = self.accountant.counts
        self.rates = self.accountant.rates
        self.violations = self.accountant.violations
        self.refusals = self.accountant.refusals
        self.stressed = False
        self._is_blocked = is_blocked
        # Bumped by every change to the blocklist: open sessions look again only then.
        self.generation = generation
        self.allowed = is_allowed
        self._on_ban = on_ban
        self._on_stress = on_stress
        self._stress_on = limits.stress_connections
        self._stress_off = max(0, int(self._stress_on * STRESS_EXIT_FRACTION))
        # A worker of a host sees only its share of the connections: the host's gate
        # decides stress from the host's total and tells it (`set_stressed`).
        self._local_stress = local_stress

    @property
    def limits(self) -> Limits:
        """The limits in force now: the stressed variant while under stress."""
        return self.stressed_limits if self.stressed else self.normal

    def key(self, ip: str) -> str:
        return client_key(ip, self.normal.ipv6_prefix)

    def connect(self, ip: str) -> tuple[str, Refusal | None]:
        """Admit (and count) or refuse a new connection from `ip`. O(1), no I/O."""
        key = self.key(ip)
        refusal = self._access(ip, key)
        if refusal is not None:
            return key, refusal
        if self.counts.total >= self.normal.max_connections:
            return key, GLOBAL_CAP
        refusal = self._client_checks(key, self.allowed(ip))
        if refusal is not None:
            return key, refusal
        self.counts.acquire(key)
        self._update_stress()
        return key, None

    def connect_unkeyed(self) -> Refusal | None:
        """Admit a connection whose client is not known yet (a trusted proxy's)."""
        if self.counts.total >= self.normal.max_connections:
            return GLOBAL_CAP
        self.counts.acquire(None)
        self._update_stress()
        return None

    def identify(self, ip: str) -> tuple[str, Refusal | None]:
        """Per-client checks for an unkeyed connection once its client is known."""
        key = self.key(ip)
        refusal = self._access(ip, key) or self._client_checks(key, self.allowed(ip))
        if refusal is None:
            self.counts.acquire_key(key)
        return key, refusal

    def _access(self, ip: str, key: str) -> Refusal | None:
        """The blocklist: manual entries and automatic bans alike (an allowlist entry
        lifts the automatic bans it covers from the blocklist itself)."""
        if self._is_blocked(ip):
            return BLOCKED_ALLOWLISTED if self.allowed(ip) else BLOCKED
        return None

    def banned(self, ip: str) -> Refusal | None:
        """For an open session: whether its client has been blocked since it connected."""
        return self._access(ip, "")

    def _client_checks(self, key: str, allowed: bool) -> Refusal | None:
        if allowed:  # its own cap; no rate, no hit toward a ban
            if self.counts.of(key) >= self.normal.allowlist_max_connections_per_ip:
                return PER_IP_CAP
            return None
        if self.counts.of(key) >= self.normal.max_connections_per_ip:
            self._refused(key, PER_IP_CAP.reason)
            return PER_IP_CAP
        if not self.rates.take("c:" + key, self.normal.connection_rate):
            self._refused(key, CONNECTION_RATE.reason)
            return CONNECTION_RATE
        return None

    def release(self, key: str | None) -> None:
        """The connection counted under `key` (None: unkeyed) has ended."""
        self.counts.release(key)
        self._update_stress()

    def mail(self, key: str, allowed: bool = False) -> Refusal | None:
        """One more message from `key` (checked at MAIL FROM); allowlisted: no limit."""
        if allowed or self.rates.take("m:" + key, self.limits.message_rate):
            return None
        return MESSAGE_RATE  # a deferral: never a step toward a ban

    def handshake(self, key: str) -> bool:
        """One more TLS handshake from `key` within its per-minute rate (STARTTLS)."""
        return self.rates.take("t:" + key, self.limits.tls_handshake_rate)

    def rcpt(self, key: str, allowed: bool = False) -> Refusal | None:
        """One more recipient from `key` (checked at RCPT TO); allowlisted: no limit."""
        if allowed or self.rates.take("r:" + key, self.limits.recipient_rate):
            return None
        return RECIPIENT_RATE  # a deferral: never a step toward a ban

    def mailbox(self, mailbox: str) -> Refusal | None:
        """One more message for `mailbox`, whoever sends it (an alert loop, a flood)."""
        if self.rates.take("b:" + mailbox, self.limits.mailbox_rate):
            return None
        return MAILBOX_RATE

    def violation(self, key: str, reason: str, allowed: bool = False) -> bool:
        """Record a protocol violation by `key`; ban it once it keeps committing them.
        True if this one banned it. An allowlisted client is never banned."""
        if allowed:
            return False
        return self._count(self.violations, self.normal.autoban_threshold, key, reason)

    def _refused(self, key: str, reason: str) -> bool:
        """A connection refused at connect (cap, rate): at most one count per connection."""
        return self._count(self.refusals, self.normal.autoban_refusal_threshold, key, reason)

    def _count(self, counter: HitCounter, threshold: int, key: str, reason: str) -> bool:
        if threshold <= 0 or counter.hit(key) < threshold:
            return False
        self.violations.forget(key)
        self.refusals.forget(key)
        if self._on_ban is not None:
            self._on_ban(key, reason, self.normal.autoban_ttl)
        return True

    def set_stressed(self, stressed: bool) -> None:
        """Stress decided elsewhere (the host's gate, from every worker's connections)."""
        if stressed != self.stressed:
            self.stressed = stressed
            if self._on_stress is not None:
                self._on_stress(stressed, self.counts.total)

    def _update_stress(self) -> None:
        if not self._local_stress:
            return
        total = self.counts.total
        if not self.stressed and total >= self._stress_on:
            self.stressed = True
        elif self.stressed and total < self._stress_off:
            self.stressed = False
        else:
            return
        if self._on_stress is not None:
            self._on_stress(self.stressed, total)
