"""Screening before the banner, as data (Postfix's postscreen): checks with a name, a weight
and an action, run together under one deadline while the client waits for the banner.

The checks are the configured DNS lists (`receiver.door.dnsbl`) and reverse DNS (weight 0: it
only names the client for our `Received:` line). Each list's answer adds the weight of
every site it matches; a score at or above the threshold refuses the client with the
strongest action among the checks that scored: `ignore` (counted and shown, nothing
else: the dry run), `enforce` (`550 5.7.1` to every RCPT), `drop` (`521 5.7.1` instead of
the banner).

Fail open: a lookup that times out, fails or answers nonsense counts as "not listed", and
is counted by list and outcome. A list that answers `127.255.255.x` ("you query too
much") is asked once more, for its test entry (RFC 5782 5), on a query of its own: only if
that says the same is it not asked for `DISABLE_SECONDS`, with one log line, so one forged
answer cannot turn a list off. Verdicts are cached per client address no longer than the
lists' own answers allow (their TTL; a "not listed" its SOA's negative TTL, RFC 2308), and
a pass never longer than the pass TTL: a forged "not listed" cannot mint a long pass. A
pass is cached only when every list answered; a listing, for its TTL, so a listed client
that keeps connecting costs no lookups. Allowlisted clients are not looked up.

Fail open for a client, never for everyone: each network (an IPv4 /24, an IPv6 /48) has a
budget of lookups per minute. A client whose network has spent it is not screened and not
greeted either: the door tells it `421` (a real MTA retries), so one network flooding new
addresses cannot spend the resolver's whole budget and leave other networks unscreened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cachetools import TTLCache
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from receiver import replies
from receiver.door import dnsbl
from receiver.door.accountant import RateTable
from receiver.door.keys import client_key, network_key
from receiver.replies import Reply
from receiver.resolver import PTR, A, Answer, Resolver
from receiver.telemetry.events import emit

__all__ = [
    "ACTIONS",
    "LOOKUP_OUTCOMES",
    "PASS",
    "REVERSE_DNS",
    "VERDICTS",
    "Check",
    "Screen",
    "ScreenConfig",
    "ScreenMetrics",
    "Verdict",
    "screen_deadline",
]

ACTIONS = ("ignore", "enforce", "drop")  # weakest first
VERDICTS = ("pass", "cached", "allowlisted", "deferred", *ACTIONS)
# Per check: `listed`/`clean` (an answer), `timeout`, `servfail`, `garbage` (unparsable,
# or an address outside 127.0.0.0/8), `throttled` (not sent: lookup caps), `disabled`
# (the list said 127.255.255.x recently), `refused` (it says so now).
LOOKUP_OUTCOMES = (
    "listed",
    "clean",
    "timeout",
    "servfail",
    "garbage",
    "throttled",
    "disabled",
    "refused",
)
REVERSE_DNS = "reverse-dns"  # the reverse DNS check's name (not a list domain)
DISABLE_SECONDS = 600.0  # a list that refuses us is left alone this long
CACHE_SIZE = 100_000  # verdicts remembered (client addresses), least recent dropped
UNSAID_TTL = 300.0  # a "not listed" whose answer named no SOA is kept at most this long
_RESOLVER = {"nxdomain": "clean", "answer": "clean"}  # else the resolver's own word


@dataclass(frozen=True, slots=True)
class Check:
    """One DNS-list check: a site of `FLOODGATE_DNSBL_SITES` and the action it carries."""

    name: str  # the list domain: a bounded label, configured by the operator
    weight: int
    action: str
    site: dnsbl.Site


@dataclass(frozen=True)
class ScreenConfig:
    """The screen's policy, resolved from settings at start-up."""

    sites: tuple[dnsbl.Site, ...] = ()
    action: str = "ignore"
    threshold: int = 1
    replies: Mapping[str, str] = field(default_factory=dict)  # list domain -> shown name
    reverse_dns: bool = False
    dns_timeout: float = 2.0  # per lookup (per list)
    pass_ttl: float = 3600.0  # at most; a list's own TTL shortens it
    network_rate: int = 300  # lookups per minute per IPv4 /24 or IPv6 /48 (a burst of as many)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")

    @property
    def active(self) -> bool:
        """Whether there is anything to do before the banner (off: no DNS at all)."""
        return bool(self.sites) or self.reverse_dns

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(Check(s.domain, s.weight, self.action, s) for s in self.sites)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the screen decided: `action` None to greet, else how to refuse."""

    action: str | None = None
    score: int = 0
    reason: str = ""  # for the live statistics: "dnsbl zen.example"
    reply: Reply | None = None  # the 550 (enforce) or 521 (drop) naming the list
    client_name: str | None = None  # reverse DNS, when on ("" when none was found)
    verdict: str = "pass"  # one of VERDICTS, for the metrics
    listed: str = ""  # the list that weighed most (a configured domain), when one did
    deferred: bool = False  # the client's network spent its lookup budget: not screened


PASS = Verdict()
DEFERRED = Verdict(verdict="deferred", deferred=True)


def screen_deadline(greet_wait: float, screen_timeout: float, stressed: bool) -> float:
    """The whole screen's deadline: within the pregreet wait when that is on (the client
    waits for the banner then anyway), else the screen timeout; under stress never more
    than the (stressed) screen timeout: the screen tightens its deadline, not verdicts."""
    deadline = greet_wait if greet_wait > 0 else screen_timeout
    return min(deadline, screen_timeout) if stressed else deadline


class ScreenMetrics:
    """Per check and outcome, in the receiver's registry; labels from bounded sets."""

    def __init__(self, registry: CollectorRegistry, checks: tuple[str, ...]) -> None:
        self.lookups = PromCounter(
            "floodgate_screen_lookups",
            "Screen lookups by check (list domain or reverse-dns) and outcome",
            ["check", "outcome"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            "floodgate_screen_lookup_seconds",
            "Time for a screen lookup to answer (or fail), by check",
            ["check"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.verdicts = PromCounter(
            "floodgate_screen_verdicts",
            "Screened connections by verdict",
            ["verdict"],
            registry=registry,
        )
        self.seconds = Histogram(
            "floodgate_screen_seconds",
            "Time the screen held a banner (uncached screens only)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 6),
            registry=registry,
        )
        # Every child made once: the labels are known up front, and a lookup per screen
        # by label values costs more than the counting itself.
        self.latency = {check: self.lookup_seconds.labels(check) for check in checks}
        self.outcomes = {
            (check, outcome): self.lookups.labels(check, outcome)
            for check in checks
            for outcome in LOOKUP_OUTCOMES
        }
        self.by_verdict = {verdict: self.verdicts.labels(verdict) for verdict in VERDICTS}


class Screen:
    """Runs the checks for one client and returns a `Verdict`; never raises."""

    def __init__(
        self,
        config: ScreenConfig,
        resolver: Resolver,
        metrics: ScreenMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.metrics = metrics
        self._clock = clock
        self._checks = config.checks
        self._domains = dnsbl.domains(config.sites)
        self._by_domain = {d: [c for c in self._checks if c.name == d] for d in self._domains}
        # Verdicts by client address, each with its own expiry (the lists' TTLs).
        self._cached: TTLCache[str, tuple[float, Verdict]] = TTLCache(
            CACHE_SIZE, max(config.pass_ttl, 1.0), clock
        )
        self._budget = RateTable(CACHE_SIZE, clock)
        self._disabled: dict[str, float] = {}
        self._confirming: set[str] = set()
        self._tally: Counter[str] = Counter()  # this interval, for the summary line
        self._lookups: dict[str, Counter[str]] = {}

    async def screen(self, ip: str, allowed: bool, deadline: float) -> Verdict:
        """Screen one client within `deadline` seconds."""
        cached = self._cached.get(ip)
        if cached is not None and cached[0] > self._clock():
            return self._verdict(dataclasses.replace(cached[1], verdict="cached"))
        if allowed and not self.config.reverse_dns:
            return self._verdict(Verdict(verdict="allowlisted"))
        asked = (0 if allowed else len(self._domains)) + (1 if self.config.reverse_dns else 0)
        if not self._budget.take(network_key(client_key(ip)), self.config.network_rate, asked):
            return self._verdict(DEFERRED)
        started = self._clock()
        lookups = self._start(ip, allowed, min(deadline, self.config.dns_timeout))
        if lookups:  # each lookup ends by its own timer; this bounds the whole screen too
            await asyncio.wait(lookups.values(), timeout=deadline)
        self.metrics.seconds.observe(self._clock() - started)
        verdict, keep = self._judge(ip, lookups)
        if allowed:
            verdict = Verdict(client_name=verdict.client_name, verdict="allowlisted")
        elif keep > 0:
            self._cached[ip] = (self._clock() + keep, verdict)
        return self._verdict(verdict)

    def _start(self, ip: str, allowed: bool, timeout: float) -> dict[str, asyncio.Future[Answer]]:
        lookups: dict[str, asyncio.Future[Answer]] = {}
        now = self._clock()
        for domain in () if allowed else self._domains:
            name = dnsbl.query_name(ip, domain)
            if name is None:
                continue
            if self._disabled.get(domain, 0.0) > now:
                self._count(domain, "disabled")
                continue
            lookups[domain] = self.resolver.lookup(name, A, timeout)
        if self.config.reverse_dns:
            with contextlib.suppress(ValueError):
                pointer = ipaddress.ip_address(ip).reverse_pointer
                lookups[REVERSE_DNS] = self.resolver.lookup(pointer, PTR, timeout)
        return lookups

    def _judge(self, ip: str, lookups: dict[str, asyncio.Future[Answer]]) -> tuple[Verdict, float]:
        """The score and verdict, and how long it may be kept (0: not at all)."""
        score, complete = 0, True
        listed: dict[str, int] = {}  # domain -> weight it added
        client_name: str | None = None
        keep = self.config.pass_ttl
        for check, future in lookups.items():
            answer = future.result() if future.done() else Answer("timeout")
            if check == REVERSE_DNS:
                client_name = answer.values[0] if answer.values else ""
                self._count(check, "clean" if answer.outcome in _RESOLVER else answer.outcome)
                self.metrics.latency[check].observe(answer.seconds)
                continue
            added, outcome = self._list(check, answer)
            score += added
            complete = complete and outcome in ("listed", "clean")
            if outcome in ("listed", "clean"):
                keep = min(keep, answer.ttl if answer.ttl is not None else UNSAID_TTL)
            if outcome == "listed":
                listed[check] = added
        complete = complete and len(lookups) - (REVERSE_DNS in lookups) == len(self._domains)
        if score < self.config.threshold:
            return Verdict(score=score, client_name=client_name), keep if complete else 0.0
        action = max(
            (c.action for c in self._checks if c.name in listed and c.weight > 0),
            key=ACTIONS.index,
            default=self.config.action,
        )
        worst = max(listed, key=lambda d: listed[d]) if listed else "threshold"
        # A listing is kept for its own TTL: a listed client that keeps connecting costs
        # no lookups (and its refusals count toward a ban at the door).
        return self._refusal(ip, action, score, worst, client_name), keep

    def _list(self, domain: str, answer: Answer) -> tuple[int, str]:
        """The weight one list's answer adds, and its outcome (counted)."""
        self.metrics.latency[domain].observe(answer.seconds)
        values = answer.values
        weight = 0
        if answer.outcome != "answer":
            outcome = _RESOLVER.get(answer.outcome, answer.outcome)
        elif any(dnsbl.blocked_query(v) for v in values):
            outcome = "refused"
            self._confirm(domain, values)
        elif not any(dnsbl.usable(v) for v in values):
            outcome = "garbage"
        else:
            usable = [v for v in values if dnsbl.usable(v)]
            matching = [c for c in self._by_domain[domain] if any(map(c.site.matches, usable))]
            weight = sum(c.weight for c in matching)
            outcome = "listed" if matching else "clean"
        self._count(domain, outcome)
        return weight, outcome

    def _refusal(
        self, ip: str, action: str, score: int, domain: str, client_name: str | None
    ) -> Verdict:
        shown = dnsbl.shown_name(domain, self.config.replies)
        text = f"Service unavailable; client [{ip}] blocked using {shown}"
        reply = None
        if action == "drop":
            reply = replies.DNSBL_DROP.with_text(text)
        elif action == "enforce":
            reply = replies.DNSBL_ENFORCE.with_text(text)
        reason = f"dnsbl {domain}" if action != "ignore" else f"dnsbl-ignored {domain}"
        return Verdict(action, score, reason, reply, client_name, action, domain)

    def _confirm(self, domain: str, values: tuple[str, ...]) -> None:
        """A list says it will not answer us: ask its test entry (which every list holds,
        RFC 5782 5) on a fresh query before believing it; one forged answer is not enough
        to turn a list off for every client."""
        if domain in self._confirming or self._disabled.get(domain, 0.0) > self._clock():
            return
        name = dnsbl.query_name("127.0.0.2", domain)
        if name is None:
            return
        self._confirming.add(domain)
        probe = self.resolver.lookup(name, A, self.config.dns_timeout)
        probe.add_done_callback(lambda done: self._confirmed(domain, done.result()))

    def _confirmed(self, domain: str, answer: Answer) -> None:
        self._confirming.discard(domain)
        if answer.outcome == "answer" and any(dnsbl.blocked_query(v) for v in answer.values):
            self._disable(domain, answer.values)

    def _disable(self, domain: str, values: tuple[str, ...]) -> None:
        if self._disabled.get(domain, 0.0) > self._clock():
            return
        self._disabled[domain] = self._clock() + DISABLE_SECONDS
        emit("dnsbl_disabled", list=domain, answer=values[0], seconds=int(DISABLE_SECONDS))

    def _count(self, check: str, outcome: str) -> None:
        self.metrics.outcomes[check, outcome].inc()
        self._lookups.setdefault(check, Counter())[outcome] += 1

    def _verdict(self, verdict: Verdict) -> Verdict:
        self.metrics.by_verdict[verdict.verdict].inc()
        self._tally[verdict.verdict] += 1
        return verdict

    def summary(self) -> dict[str, object] | None:
        """This interval's counts as one log line's fields (None when idle), then reset."""
        if not self._tally:
            return None
        fields: dict[str, object] = {v: n for v, n in sorted(self._tally.items())}
        for check, outcomes in sorted(self._lookups.items()):
            fields[check] = ",".join(f"{o}:{n}" for o, n in sorted(outcomes.items()))
        fields["in_flight"] = self.resolver.in_flight
        self._tally.clear()
        self._lookups.clear()
        return fields

    async def report(self, interval: float, stop: asyncio.Event) -> None:
        """One summary line per interval, never one per client."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            fields = self.summary()
            if fields is not None:
                emit("screen_summary", **fields)
