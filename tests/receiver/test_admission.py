import dataclasses

import pytest

from receiver import replies
from receiver.door import admission
from receiver.door.admission import Admission
from receiver.door.keys import client_key
from receiver.limits import DEFAULTS, Limits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(**changes: object) -> Limits:
    return dataclasses.replace(DEFAULTS, **changes)  # type: ignore[arg-type]


def test_sixth_connection_from_same_ip_gets_421_4_7_0() -> None:
    judge = Admission(limits(max_connections_per_ip=5), clock=Clock())
    for _ in range(5):
        assert judge.connect("192.0.2.1")[1] is None
    _, refusal = judge.connect("192.0.2.1")
    assert refusal is admission.PER_IP_CAP and refusal.reply is replies.TOO_MANY_CONNECTIONS_FROM_IP
    assert judge.connect("192.0.2.2")[1] is None


def test_global_cap_refuses_before_any_per_client_work() -> None:
    judge = Admission(limits(max_connections=2), clock=Clock())
    judge.connect("192.0.2.1")
    judge.connect("192.0.2.2")
    assert judge.connect("192.0.2.3")[1] is admission.GLOBAL_CAP
    judge.release("192.0.2.1")
    assert judge.connect("192.0.2.3")[1] is None


def test_blocklisted_ip_is_refused_with_554() -> None:
    judge = Admission(DEFAULTS, is_blocked=lambda ip: ip == "198.51.100.1", clock=Clock())
    assert judge.connect("198.51.100.1")[1] is admission.BLOCKED
    assert judge.counts.total == 0  # a refusal holds no slot


def test_ipv6_clients_share_a_slot_pool_per_64() -> None:
    judge = Admission(limits(max_connections_per_ip=2), clock=Clock())
    assert judge.connect("2001:db8::1")[1] is None
    assert judge.connect("2001:db8::2")[1] is None
    assert judge.connect("2001:db8::ffff")[1] is admission.PER_IP_CAP
    assert judge.connect("2001:db8:0:1::1")[1] is None


def test_stress_turns_on_at_threshold_and_off_with_hysteresis() -> None:
    seen: list[bool] = []
    judge = Admission(
        limits(max_connections=10, stress_threshold=0.5, stress_idle_timeout=5),
        clock=Clock(),
        on_stress=lambda on, n: seen.append(on),
    )
    keys = [judge.connect(f"192.0.2.{n}")[0] for n in range(5)]
    assert judge.stressed and judge.limits.idle_timeout == 5
    judge.release(keys.pop())
    assert judge.stressed  # 4 >= 80% of 5: still stressed
    judge.release(keys.pop())
    assert not judge.stressed and judge.limits.idle_timeout == DEFAULTS.idle_timeout
    assert seen == [True, False]


class Blocklist:
    """The blocklist as admission sees it: the one home of every ban (fake clock)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[str, float] = {}
        self.changes = 0
        self.bans: list[tuple[str, str, float]] = []

    def ban(self, key: str, reason: str, ttl: float) -> None:
        self.bans.append((key, reason, ttl))
        self.entries[key] = self.clock.now + ttl
        self.changes += 1

    def remove(self, key: str) -> None:
        del self.entries[key]
        self.changes += 1

    def is_blocked(self, ip: str) -> bool:
        return self.entries.get(client_key(ip), 0.0) > self.clock.now

    def judge(self, limits: Limits, **hooks: object) -> Admission:
        return Admission(
            limits,
            is_blocked=self.is_blocked,
            generation=lambda: self.changes,
            clock=self.clock,
            on_ban=self.ban,
            **hooks,  # type: ignore[arg-type]
        )


def test_client_that_keeps_connecting_while_refused_is_banned_once() -> None:
    blocklist = Blocklist(Clock())
    judge = blocklist.judge(
        limits(max_connections_per_ip=1, autoban_refusal_threshold=3, autoban_ttl=60)
    )
    judge.connect("192.0.2.9")
    for _ in range(3):
        assert judge.connect("192.0.2.9")[1] is admission.PER_IP_CAP
    assert blocklist.bans == [("192.0.2.9", "per_ip_cap", 60)]
    judge.release("192.0.2.9")
    assert judge.connect("192.0.2.9")[1] is admission.BLOCKED


def test_rate_deferrals_never_lead_to_a_ban() -> None:
    blocklist = Blocklist(Clock())
    judge = blocklist.judge(limits(message_rate=1, recipient_rate=1, autoban_threshold=2))
    deferrals = [judge.mail("192.0.2.8") for _ in range(500)]
    deferrals += [judge.rcpt("192.0.2.8") for _ in range(500)]
    assert deferrals.count(admission.MESSAGE_RATE) == 499
    assert deferrals.count(admission.RECIPIENT_RATE) == 499
    assert blocklist.bans == [] and judge.connect("192.0.2.8")[1] is None


def test_violations_ban_at_the_threshold_within_the_window() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=3, autoban_window=60))
    assert not judge.violation("192.0.2.7", "pregreet")
    assert not judge.violation("192.0.2.7", "pregreet")
    clock.now += 61  # the window passed: counting starts again
    assert not judge.violation("192.0.2.7", "pregreet")
    assert not judge.violation("192.0.2.7", "improper_pipelining")
    assert judge.violation("192.0.2.7", "bare_newline")
    assert blocklist.bans == [("192.0.2.7", "bare_newline", DEFAULTS.autoban_ttl)]


def test_an_unban_in_the_blocklist_is_an_unban() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=1, autoban_ttl=30))
    generation = judge.generation()
    judge.violation("192.0.2.6", "pregreet")
    assert judge.connect("192.0.2.6")[1] is admission.BLOCKED
    assert judge.generation() != generation and judge.banned("192.0.2.6") is admission.BLOCKED
    blocklist.remove("192.0.2.6")  # the operator's unban: nothing else remembers the ban
    assert judge.connect("192.0.2.6")[1] is None and judge.banned("192.0.2.6") is None


def test_autoban_expires() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=2, autoban_ttl=30))
    judge.violation("k", "pregreet")
    judge.violation("k", "pregreet")
    assert judge.connect("k")[1] is admission.BLOCKED
    clock.now += 31
    assert judge.connect("k")[1] is None


def test_proxied_connection_counts_globally_then_per_client() -> None:
    judge = Admission(limits(max_connections_per_ip=1), clock=Clock())
    assert judge.connect_unkeyed() is None
    assert judge.identify("192.0.2.5") == ("192.0.2.5", None)
    assert judge.connect_unkeyed() is None
    assert judge.identify("192.0.2.5")[1] is admission.PER_IP_CAP
    judge.release(None)  # the refused one held only its global slot
    judge.release("192.0.2.5")
    assert judge.counts.total == 0 and judge.counts.keys_tracked == 0


@pytest.mark.parametrize(
    "field, value", [("max_connections", 0), ("idle_timeout", 0.0), ("max_message_size", 2**30)]
)
def test_limits_out_of_range_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        limits(**{field: value})


def test_allowlisted_clients_skip_rates_and_bans_but_keep_their_own_cap() -> None:
    limits = Limits(
        max_connections_per_ip=1,
        allowlist_max_connections_per_ip=3,
        connection_rate=1,
        message_rate=1,
        recipient_rate=1,
        autoban_threshold=2,
    )
    admission = Admission(limits, is_allowed=lambda ip: ip == "192.0.2.50")
    outcomes = [admission.connect("192.0.2.50")[1] for _ in range(4)]
    assert outcomes[:3] == [None, None, None] and outcomes[3] is not None
    assert outcomes[3].reason == "per_ip_cap"
    assert all(admission.mail("192.0.2.50", allowed=True) is None for _ in range(50))
    assert all(admission.rcpt("192.0.2.50", allowed=True) is None for _ in range(50))
    for _ in range(10):
        assert not admission.violation("192.0.2.50", "too_many_errors", allowed=True)
    for _ in range(3):
        admission.release("192.0.2.50")
    assert admission.connect("192.0.2.50")[1] is None
    assert admission.connect("192.0.2.51")[1] is None
    assert admission.connect("192.0.2.51")[1] is not None  # its neighbour: cap of 1


def test_an_explicit_blocklist_entry_wins_over_the_allowlist_and_is_named() -> None:
    admission = Admission(DEFAULTS, is_blocked=lambda ip: True, is_allowed=lambda ip: True)
    _, refusal = admission.connect("192.0.2.60")
    assert refusal is not None and refusal.reason == "blocked_allowlisted"
    assert refusal.reply == replies.BLOCKED


def test_admission_judges_by_the_accountant_it_is_given() -> None:
    """Two judges sharing one accountant see one client's connections as one count."""
    from receiver.door.accountant import Accountant

    clock = Clock()
    shared = Accountant.local(300, 1000, clock)
    first = Admission(limits(max_connections_per_ip=2), clock=clock, accountant=shared)
    second = Admission(limits(max_connections_per_ip=2), clock=clock, accountant=shared)
    assert first.connect("192.0.2.70")[1] is None
    assert second.connect("192.0.2.70")[1] is None
    assert first.connect("192.0.2.70")[1] is admission.PER_IP_CAP
    alone = Admission(limits(max_connections_per_ip=2), clock=clock)
    assert alone.connect("192.0.2.70")[1] is None  # its own counts
