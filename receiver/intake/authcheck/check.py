"""The checks for one message, started as soon as their inputs are known.

At MAIL FROM (`AuthChecker.begin`) the SPF checks of the envelope sender and of the HELO
name start at once on the loop: they need only the client address and those names. At the
final dot (`Pending.finish`) the signatures' keys and the DMARC record are looked up, the
signatures verified in a worker, and everything is awaited until the per-message deadline
at most: a check not done by then is a `temperror`, and the message goes on to the store
with what is known. `finish` never raises and never refuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from mailstore.message import MessageDocument
from receiver.intake.authcheck import dmarc, signatures, spf
from receiver.intake.authcheck.dmarc import DkimResult, OrgDomains
from receiver.intake.authcheck.lookups import ERROR, FOUND, Lookups, TtlCache
from receiver.intake.authcheck.pool import Verifier
from receiver.intake.authcheck.results import Verdicts, authentication_results, strip_forged
from receiver.intake.authcheck.spf import SpfResult
from receiver.resolver import TXT, Resolver
from receiver.telemetry.events import emit

__all__ = ["AuthChecker", "AuthConfig", "Pending"]

METHODS = ("spf", "helo", "dkim", "dmarc", "arc")
# `policy` (RFC 8601 2.7.1): a DKIM signature that verified over only part of the body.
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")
DEADLINE = "deadline passed"


@dataclass(frozen=True)
class AuthConfig:
    """The checks' settings (FLOODGATE_AUTH_*)."""

    authserv_id: str  # our hostname: the id our Authentication-Results header carries
    timeout: float = 2.0  # seconds after the final dot the checks may hold the 250
    dns_timeout: float = 1.0  # one lookup
    workers: int = 1  # signature verification processes
    queue: int = 64  # verifications waiting or running at most
    cache_size: int = 10_000  # answers kept (SPF and DMARC records, keys, addresses)
    cache_ttl: float = 300.0  # seconds an answer is kept


class AuthChecker:
    """Shared by every session of one receiver: resolver, caches, workers, counters."""

    def __init__(
        self, config: AuthConfig, resolver: Resolver, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.dns = Lookups(
            resolver, timeout=config.dns_timeout, size=config.cache_size, ttl=config.cache_ttl
        )
        self.orgs = OrgDomains()
        # SPF results by (client, domain): a warm sender costs no evaluation at all.
        self.spf_results: TtlCache[tuple[str, str], SpfResult] = TtlCache(
            config.cache_size, config.cache_ttl
        )
        # DMARC policies by From domain (None: no record), as found through the cache.
        self.policies: TtlCache[str, tuple[dmarc.Policy | None]] = TtlCache(
            config.cache_size, config.cache_ttl
        )
        # A worker whose oldest job outlived a message's whole deadline is stuck.
        self.verifier = Verifier(config.workers, config.queue, stuck_after=config.timeout)
        self.results = Counter(
            "floodgate_auth_results",
            "Authentication verdicts of accepted messages, by method and result",
            ["method", "result"],
            registry=registry,
        )
        self._counts = {(m, r): self.results.labels(m, r) for m in METHODS for r in RESULTS}

    async def open(self) -> None:
        await self.resolver.open()
        await self.verifier.start()

    async def close(self) -> None:
        await self.verifier.close()
        self.resolver.close()

    def begin(self, ip: str, helo: str, sender: str, clock: Any) -> Pending:
        """Start the SPF checks of a transaction (at MAIL FROM)."""
        return Pending(self, ip, helo, sender, clock)

    def count(self, verdicts: Verdicts) -> None:
        counts = self._counts
        counts["spf", verdicts.spf.result].inc()
        counts["helo", verdicts.helo.result].inc()
        for d in verdicts.dkim:
            counts["dkim", d.result].inc()
        if verdicts.dmarc is not None:
            counts["dmarc", verdicts.dmarc.result].inc()
        counts["arc", verdicts.arc[0]].inc()


class Pending:
    """One transaction's checks: SPF running since MAIL FROM, the rest at the final dot."""

    __slots__ = ("checker", "clock", "helo", "helo_task", "ip", "sender", "spf_domain", "spf_task")

    def __init__(self, checker: AuthChecker, ip: str, helo: str, sender: str, clock: Any) -> None:
        self.checker = checker
        self.clock = clock
        self.ip = ip
        self.helo = helo.lower().rstrip(".")
        self.sender = sender
        # RFC 7208 2.4: the null sender is checked as postmaster@<HELO name>.
        self.spf_domain = sender.rpartition("@")[2].lower() if sender else self.helo
        identity = sender or f"postmaster@{self.helo}"
        self.spf_task = self._spf(self.spf_domain, identity)
        self.helo_task = self._spf(self.helo, f"postmaster@{self.helo}")

    def _spf(self, domain: str, identity: str) -> asyncio.Future[SpfResult]:
        """The SPF check of one identity: remembered, or started now."""
        cached = self.checker.spf_results.get((self.ip, domain))
        if cached is not None:
            done: asyncio.Future[SpfResult] = asyncio.get_running_loop().create_future()
            done.set_result(cached)
            return done
        task: asyncio.Task[SpfResult] = self.clock.create_task(
            spf.check_host(self.checker.dns, self.ip, domain, identity, self.helo)
        )
        task.add_done_callback(self._remember)
        return task

    def _remember(self, task: asyncio.Future[SpfResult]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        # Not a temporary failure, nor a result a macro tied to this sender (RFC 7208 7.3).
        if result.result != "temperror" and not result.personal:
            self.checker.spf_results.put((self.ip, result.domain), result)

    def cancel(self) -> None:
        """The transaction was abandoned (RSET, a new HELO, the client left)."""
        self.spf_task.cancel()
        self.helo_task.cancel()

    async def finish(self, message: MessageDocument) -> MessageDocument:
        """The message with its verdicts, our header, and no forged one; within the
        deadline; never raises (a bug costs the verdicts, never the message)."""
        try:
            verdicts = await self._verdicts(message)
        except Exception as error:
            emit("auth_exception", error=type(error).__name__)
            self.cancel()
            return message
        checker = self.checker
        checker.count(verdicts)
        header = authentication_results(checker.config.authserv_id, verdicts, self.sender)
        return dataclasses.replace(
            message,
            raw=strip_forged(message.raw, checker.config.authserv_id),
            received_header=header + message.received_header,
            auth=verdicts.document(),
        )

    async def _verdicts(self, message: MessageDocument) -> Verdicts:
        checker = self.checker
        fields = signatures.header_fields(message.raw)
        needs, arc = signatures.key_needs(fields)
        froms = [v.decode("utf-8", "replace") for n, v in fields if n == b"from"]
        author = dmarc.from_domain(froms)
        signed = self.clock.create_task(self._signatures(message.raw, needs, arc))
        policy = self._policy(author)
        # One wait for everything, until the deadline: what is not done then is temperror.
        waiting = {self.spf_task, self.helo_task, signed, policy}
        await asyncio.wait(waiting, timeout=checker.config.timeout)
        for task in waiting:
            task.cancel()  # a no-op for those done
        spf_result = _spf(self.spf_task, self.spf_domain)
        helo_result = _spf(self.helo_task, self.helo)
        if signed.done() and not signed.cancelled() and signed.exception() is None:
            dkim_results, arc_result = signed.result()
        else:
            dkim_results = [
                DkimResult("temperror", n.domain, n.selector, DEADLINE) if n else _unusable()
                for n in needs
                if n is None or n.field == "dkim-signature"
            ]
            arc_result = ("temperror", DEADLINE) if arc else ("none", "")
        if not policy.done() or policy.cancelled() or policy.exception() is not None:
            failed = policy.done() and not policy.cancelled()
            why = str(policy.exception()) if failed else DEADLINE
            dmarc_result = dmarc.DmarcResult("temperror", author or "", None, False, False, why)
        else:
            found = policy.result()
            dmarc_result = dmarc.verdict(checker.orgs, author, found, spf_result, dkim_results)
        if author is not None and dmarc.encoded_from(froms):
            said = f"{dmarc.ENCODED_FROM}; {dmarc_result.reason}"
            dmarc_result = dataclasses.replace(dmarc_result, reason=said)
        return Verdicts(spf_result, helo_result, dkim_results, dmarc_result, arc_result)

    def _policy(self, author: str | None) -> asyncio.Future[dmarc.Policy | None]:
        """The DMARC policy governing `author`: remembered, or looked up now."""
        checker = self.checker
        known = checker.policies.get(author) if author is not None else (None,)
        if known is not None:
            done: asyncio.Future[dmarc.Policy | None] = asyncio.get_running_loop().create_future()
            done.set_result(known[0])
            return done
        task: asyncio.Task[dmarc.Policy | None] = self.clock.create_task(
            dmarc.policy(checker.dns, checker.orgs, author)
        )

        def remember(task: asyncio.Future[dmarc.Policy | None]) -> None:
            if author is not None and not task.cancelled() and task.exception() is None:
                checker.policies.put(author, (task.result(),))

        task.add_done_callback(remember)
        return task

    async def _signatures(
        self, raw: bytes, needs: list[signatures.KeyNeed | None], arc: bool
    ) -> tuple[list[DkimResult], tuple[str, str]]:
        names = sorted({n.name for n in needs if n is not None})
        ask = self.checker.dns.ask
        if len(names) == 1:  # the common case: no task for one lookup
            answers = [await ask(names[0], TXT)]
        else:
            answers = list(await asyncio.gather(*(ask(name, TXT) for name in names)))
        found = dict(zip(names, answers, strict=True))
        keys = {
            name: next((v for v in a.values if "p=" in v), a.values[0])
            for name, a in found.items()
            if a.status == FOUND and a.values
        }
        results: dict[int, DkimResult] = {}
        todo: list[tuple[int, str]] = []
        dkim_needs = [n for n in needs if n is None or n.field == "dkim-signature"]
        cost = max(1, signatures.hashed_bytes(raw))
        hashing = signatures.HASH_BUDGET
        for index, need in enumerate(dkim_needs):
            if need is None:
                results[index] = _unusable()
            elif found[need.name].status == ERROR:
                results[index] = DkimResult(
                    "temperror", need.domain, need.selector, found[need.name].why
                )
            elif need.name not in keys:
                results[index] = DkimResult("permerror", need.domain, need.selector, "no key")
            elif (outside := signatures.key_outside_bounds(keys[need.name])) is not None:
                results[index] = DkimResult("permerror", need.domain, need.selector, outside)
            elif hashing < cost and todo:  # the first signature is always verified
                results[index] = DkimResult(
                    "temperror", need.domain, need.selector, "too much to hash in one message"
                )
            else:
                hashing -= cost
                todo.append((index, need.name))
        # A key outside RFC 8301's bounds never reaches a worker, an ARC one included.
        keys = {n: r for n, r in keys.items() if signatures.key_outside_bounds(r) is None}
        arc_result = ("none", "")
        if arc and any(a.status == ERROR for a in answers):
            arc_result, arc = ("temperror", "DNS failure for an ARC key"), False
        if todo or arc:
            outcome = await self.checker.verifier.verify(raw, keys, todo, arc, self.ip)
            if outcome is None:
                for index, _ in todo:
                    need = dkim_needs[index]
                    assert need is not None
                    results[index] = DkimResult("temperror", need.domain, need.selector, "busy")
                arc_result = ("temperror", "busy") if arc else arc_result
            else:
                for index, (result, reason) in outcome["dkim"].items():
                    need = dkim_needs[index]
                    assert need is not None
                    results[index] = DkimResult(result, need.domain, need.selector, reason)
                if arc:
                    arc_result = _arc(outcome["arc"])
        return [results[i] for i in range(len(dkim_needs))], arc_result


def _unusable() -> DkimResult:
    return DkimResult("permerror", "", "", "no usable d= or s= tag")


def _arc(outcome: tuple[str, str]) -> tuple[str, str]:
    cv, reason = outcome
    return (cv if cv in ("pass", "fail", "none") else "permerror", reason)


def _spf(task: asyncio.Future[SpfResult], domain: str) -> SpfResult:
    """The task's result, or temperror (RFC 8601 2.7.2) when the deadline came first."""
    if task.done() and not task.cancelled():
        return task.result()
    return SpfResult("temperror", domain, DEADLINE)
