"""The door's judge: caps, connection rate, stress, refusal bans, from memory."""

import dataclasses

import pytest

from receiver import replies
from receiver.door import admission
from receiver.door.accountant import Accountant
from receiver.door.admission import Admission, Admitted, Refusal
from receiver.door.keys import client_key
from receiver.limits import DEFAULTS, Limits
from receiver.vocabulary import Refused, Violation


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(**changes: object) -> Limits:
    return dataclasses.replace(DEFAULTS, **changes)  # type: ignore[arg-type]


def refusal(judge: Admission, ip: str) -> Refusal | None:
    """The refusal for one more connection from `ip`, or None (admitted and counted)."""
    _, verdict = judge.connect(ip)
    return verdict if isinstance(verdict, Refusal) else None


def test_sixth_connection_from_same_ip_gets_421_4_7_0() -> None:
    judge = Admission(limits(max_connections_per_ip=5), clock=Clock())
    for _ in range(5):
        assert refusal(judge, "192.0.2.1") is None
    refused = refusal(judge, "192.0.2.1")
    assert refused is admission.PER_IP_CAP
    assert refused.reply is replies.TOO_MANY_CONNECTIONS_FROM_IP
    assert refusal(judge, "192.0.2.2") is None


def test_an_admitted_client_is_named_by_its_key_and_allowlisting() -> None:
    judge = Admission(DEFAULTS, is_allowed=lambda ip: ip == "192.0.2.3", clock=Clock())
    assert judge.connect("2001:db8::7") == ("2001:db8::/64", Admitted("2001:db8::/64", False))
    assert judge.connect("192.0.2.3") == ("192.0.2.3", Admitted("192.0.2.3", True))


def test_global_cap_refuses_before_any_per_client_work() -> None:
    judge = Admission(limits(max_connections=2), clock=Clock())
    judge.connect("192.0.2.1")
    judge.connect("192.0.2.2")
    assert refusal(judge, "192.0.2.3") is admission.GLOBAL_CAP
    judge.release("192.0.2.1")
    assert refusal(judge, "192.0.2.3") is None


def test_at_a_cap_the_closes_not_yet_reported_are_taken_in_first() -> None:
    # A worker process reports each close over its channel; a client that reconnects as
    # soon as it reads our 221 must find its slot free, not a cap.
    judge = Admission(limits(max_connections_per_ip=1), clock=Clock())
    judge.connect("192.0.2.4")
    settled: list[str] = []

    def settle() -> None:
        settled.append("read")
        judge.release("192.0.2.4")  # the close report that was waiting in the channel

    assert judge.connect("192.0.2.5", settle)[1] == Admitted("192.0.2.5", False)
    assert settled == []  # under its cap: nothing to take in, nothing read
    assert isinstance(judge.connect("192.0.2.4", settle)[1], Admitted)
    assert settled == ["read"] and len(judge.accountant.refusals) == 0


def test_blocklisted_ip_is_refused_with_554() -> None:
    judge = Admission(DEFAULTS, is_blocked=lambda ip: ip == "198.51.100.1", clock=Clock())
    assert refusal(judge, "198.51.100.1") is admission.BLOCKED
    assert judge.counts.total == 0  # a refusal holds no slot


def test_ipv6_clients_share_a_slot_pool_per_64() -> None:
    judge = Admission(limits(max_connections_per_ip=2), clock=Clock())
    assert refusal(judge, "2001:db8::1") is None
    assert refusal(judge, "2001:db8::2") is None
    assert refusal(judge, "2001:db8::ffff") is admission.PER_IP_CAP
    assert refusal(judge, "2001:db8:0:1::1") is None


def test_stress_turns_on_at_threshold_and_off_with_hysteresis() -> None:
    seen: list[bool] = []
    judge = Admission(
        limits(max_connections=10, stress_threshold=0.5),
        clock=Clock(),
        on_stress=lambda on, n: seen.append(on),
    )
    keys = [judge.connect(f"192.0.2.{n}")[0] for n in range(5)]
    assert judge.stressed
    judge.release(keys.pop())
    assert judge.stressed  # 4 >= 80% of 5: still stressed
    judge.release(keys.pop())
    assert not judge.stressed
    assert seen == [True, False]


class Blocklist:
    """The blocklist as admission sees it: the one home of every ban (fake clock)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[str, float] = {}
        self.bans: list[tuple[str, str, float]] = []

    def ban(self, key: str, reason: str, ttl: float) -> None:
        self.bans.append((key, reason, ttl))
        self.entries[key] = self.clock.now + ttl

    def remove(self, key: str) -> None:
        del self.entries[key]

    def is_blocked(self, ip: str) -> bool:
        return self.entries.get(client_key(ip), 0.0) > self.clock.now

    def judge(self, limits: Limits) -> Admission:
        return Admission(limits, is_blocked=self.is_blocked, clock=self.clock, on_ban=self.ban)


def test_client_that_keeps_connecting_while_refused_is_banned_once() -> None:
    blocklist = Blocklist(Clock())
    judge = blocklist.judge(
        limits(max_connections_per_ip=1, autoban_refusal_threshold=3, autoban_ttl=60)
    )
    judge.connect("192.0.2.9")
    for _ in range(3):
        assert refusal(judge, "192.0.2.9") is admission.PER_IP_CAP
    assert blocklist.bans == [("192.0.2.9", Refused.PER_IP_CAP, 60)]
    judge.release("192.0.2.9")
    assert refusal(judge, "192.0.2.9") is admission.BLOCKED


def test_pregreet_violations_ban_at_the_threshold_within_the_window() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=3, autoban_window=60))
    assert not judge.violation("192.0.2.7", Violation.PREGREET)
    assert not judge.violation("192.0.2.7", Violation.PREGREET)
    clock.now += 61  # the window passed: counting starts again
    assert not judge.violation("192.0.2.7", Violation.PREGREET)
    assert not judge.violation("192.0.2.7", Violation.PREGREET)
    assert judge.violation("192.0.2.7", Violation.PREGREET)
    assert blocklist.bans == [("192.0.2.7", Violation.PREGREET, DEFAULTS.autoban_ttl)]


def test_an_unban_in_the_blocklist_is_an_unban() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=1, autoban_ttl=30))
    judge.violation("192.0.2.6", Violation.PREGREET)
    assert refusal(judge, "192.0.2.6") is admission.BLOCKED
    blocklist.remove("192.0.2.6")  # the operator's unban: nothing else remembers the ban
    assert refusal(judge, "192.0.2.6") is None


def test_autoban_expires() -> None:
    clock = Clock()
    blocklist = Blocklist(clock)
    judge = blocklist.judge(limits(autoban_threshold=2, autoban_ttl=30))
    judge.violation("192.0.2.11", Violation.PREGREET)
    judge.violation("192.0.2.11", Violation.PREGREET)
    assert refusal(judge, "192.0.2.11") is admission.BLOCKED
    clock.now += 31
    assert refusal(judge, "192.0.2.11") is None


@pytest.mark.parametrize(
    "field, value", [("max_connections", 0), ("idle_timeout", 0.0), ("max_message_size", 2**30)]
)
def test_limits_out_of_range_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        limits(**{field: value})


def test_allowlisted_clients_skip_the_rate_and_bans_but_keep_their_own_cap() -> None:
    limits = Limits(
        max_connections_per_ip=1,
        allowlist_max_connections_per_ip=3,
        connection_rate=1,
        autoban_threshold=2,
    )
    judge = Admission(limits, is_allowed=lambda ip: ip == "192.0.2.50")
    outcomes = [refusal(judge, "192.0.2.50") for _ in range(4)]
    assert outcomes[:3] == [None, None, None] and outcomes[3] is admission.PER_IP_CAP
    for _ in range(10):
        assert not judge.violation("192.0.2.50", Violation.PREGREET, allowed=True)
    for _ in range(3):
        judge.release("192.0.2.50")
    assert refusal(judge, "192.0.2.50") is None
    assert refusal(judge, "192.0.2.51") is None
    assert refusal(judge, "192.0.2.51") is not None  # its neighbour: cap of 1


def test_an_explicit_blocklist_entry_wins_over_the_allowlist_and_is_named() -> None:
    judge = Admission(DEFAULTS, is_blocked=lambda ip: True, is_allowed=lambda ip: True)
    refused = refusal(judge, "192.0.2.60")
    assert refused is admission.BLOCKED_ALLOWLISTED
    assert refused.reason is Refused.BLOCKED_ALLOWLISTED and refused.reply == replies.BLOCKED


def test_admission_judges_by_the_accountant_it_is_given() -> None:
    """Two judges sharing one accountant see one client's connections as one count."""
    clock = Clock()
    shared = Accountant.local(300, 1000, clock)
    first = Admission(limits(max_connections_per_ip=2), clock=clock, accountant=shared)
    second = Admission(limits(max_connections_per_ip=2), clock=clock, accountant=shared)
    assert refusal(first, "192.0.2.70") is None
    assert refusal(second, "192.0.2.70") is None
    assert refusal(first, "192.0.2.70") is admission.PER_IP_CAP
    alone = Admission(limits(max_connections_per_ip=2), clock=clock)
    assert refusal(alone, "192.0.2.70") is None  # its own counts


def test_karma_earned_by_authenticated_mail_lifts_caps_and_rates_until_a_violation() -> None:
    clock = Clock()
    judge = Admission(
        limits(
            max_connections_per_ip=2,
            allowlist_max_connections_per_ip=5,
            connection_rate=3,
            karma_messages=4,
            karma_window=600,
        ),
        clock=clock,
    )
    for _ in range(3):
        judge.vouch("192.0.2.80")
    assert judge.connect("192.0.2.80")[1] == Admitted("192.0.2.80", False, False)
    judge.release("192.0.2.80")
    judge.vouch("192.0.2.80")  # the fourth authenticated message: earned
    outcomes = [refusal(judge, "192.0.2.80") for _ in range(6)]
    assert outcomes == [None] * 5 + [admission.PER_IP_CAP]  # the allowlist's cap, no rate
    for _ in range(5):
        judge.release("192.0.2.80")
    judge.violation("192.0.2.80", Violation.PREGREET)  # one violation and it is gone
    assert [refusal(judge, "192.0.2.80") for _ in range(3)][2] is not None
    for _ in range(4):
        judge.vouch("192.0.2.81")
    clock.now += 601  # evidence is recent or it is none
    assert judge.connect("192.0.2.81")[1] == Admitted("192.0.2.81", False, False)


def test_karma_is_off_at_zero_and_never_spares_a_ban() -> None:
    bans: list[tuple[str, str, float]] = []
    judge = Admission(
        limits(karma_messages=0, autoban_threshold=2), on_ban=lambda *b: bans.append(b)
    )
    for _ in range(50):
        judge.vouch("192.0.2.82")
    assert not judge.vouched("192.0.2.82")
    vouched = Admission(
        limits(karma_messages=1, autoban_threshold=2), on_ban=lambda *b: bans.append(b)
    )
    vouched.vouch("192.0.2.83")
    assert vouched.vouched("192.0.2.83")
    vouched.violation("192.0.2.83", Violation.PREGREET)
    vouched.violation("192.0.2.83", Violation.PREGREET)
    assert bans == [("192.0.2.83", Violation.PREGREET, DEFAULTS.autoban_ttl)]
