"""The dialogue's judge: rates defer and never ban; violations ban; stress tightens."""

import dataclasses

from receiver.limits import DEFAULTS, Limits
from receiver.smtp import policy
from receiver.smtp.policy import Policy
from receiver.vocabulary import Violation


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(**changes: object) -> Limits:
    return dataclasses.replace(DEFAULTS, **changes)  # type: ignore[arg-type]


def test_rate_deferrals_never_lead_to_a_ban() -> None:
    bans: list[tuple[str, str, float]] = []
    judge = Policy(
        limits(message_rate=1, recipient_rate=1, autoban_threshold=2),
        clock=Clock(),
        on_ban=lambda *ban: bans.append(ban),
    )
    deferrals = [judge.mail("192.0.2.8") for _ in range(500)]
    deferrals += [judge.rcpt("192.0.2.8") for _ in range(500)]
    assert deferrals.count(policy.MESSAGE_RATE) == 499
    assert deferrals.count(policy.RECIPIENT_RATE) == 499
    assert bans == []


def test_violations_ban_at_the_threshold_within_the_window() -> None:
    clock = Clock()
    bans: list[tuple[str, str, float]] = []
    judge = Policy(
        limits(autoban_threshold=3, autoban_window=60),
        clock=clock,
        on_ban=lambda *ban: bans.append(ban),
    )
    assert not judge.violation("192.0.2.7", Violation.IMPROPER_PIPELINING)
    assert not judge.violation("192.0.2.7", Violation.IMPROPER_PIPELINING)
    clock.now += 61  # the window passed: counting starts again
    assert not judge.violation("192.0.2.7", Violation.TLS_FAILED)
    assert not judge.violation("192.0.2.7", Violation.IMPROPER_PIPELINING)
    assert judge.violation("192.0.2.7", Violation.BARE_NEWLINE)
    assert bans == [("192.0.2.7", Violation.BARE_NEWLINE, DEFAULTS.autoban_ttl)]


def test_allowlisted_clients_have_no_rates_and_are_never_banned() -> None:
    judge = Policy(limits(message_rate=1, recipient_rate=1, autoban_threshold=1))
    assert all(judge.mail("192.0.2.50", allowed=True) is None for _ in range(50))
    assert all(judge.rcpt("192.0.2.50", allowed=True) is None for _ in range(50))
    assert not any(
        judge.violation("192.0.2.50", Violation.TOO_MANY_ERRORS, allowed=True) for _ in range(9)
    )


def test_stress_applies_the_stressed_limits() -> None:
    judge = Policy(limits(idle_timeout=60, stress_idle_timeout=5))
    assert judge.limits.idle_timeout == 60
    judge.stressed = True
    assert judge.limits.idle_timeout == 5 and judge.normal.idle_timeout == 60


def test_a_ban_made_elsewhere_is_seen_at_the_next_generation() -> None:
    blocked: set[str] = set()
    changes = [0]
    judge = Policy(DEFAULTS, is_blocked=blocked.__contains__, generation=lambda: changes[0])
    before = judge.generation()
    blocked.add("192.0.2.6")
    changes[0] += 1
    assert judge.generation() != before and judge.banned("192.0.2.6")
