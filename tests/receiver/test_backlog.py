"""A real sender's backlog against limits scaled down to bite: a stock Postfix with TLS
required, at a concurrency and a pace past the per-client cap and rates, delivers its whole
backlog in one pass once its mail has authenticated (karma), and nothing is deferred.

The limits here are a tenth of the defaults so that a backlog of a hundred shows what one
of thousands does at the defaults (README: "Where the limits bite, and karma").
"""

from __future__ import annotations

import smtplib
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ServiceFactory
from tests.receiver.test_real_senders import AUTOBAN
from tests.support.dnsserver import DnsServer, Record
from tests.support.metrics import sample
from tests.support.postfix import private_postfix

SENDER = "news@sender.test"
BACKLOG = 100
SCALED = {
    "max_connections_per_ip": "5",
    "connection_rate": "30",
    "message_rate": "30",
    "tls_handshake_rate": "30",
    "karma_messages": "5",
}


def test_a_postfix_backlog_with_karma_goes_through_in_one_pass(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    with DnsServer({"TXT:sender.test": Record.txt("v=spf1 ip4:127.0.0.1 -all")}) as dns:
        receiver = make_receiver(auth_checks="true", dns_servers=dns.address, **SCALED)
        # Ordinary mail first: five messages whose SPF passes, one connection each.
        for n in range(5):
            with smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.sender.test") as c:
                c.sendmail(SENDER, [f"earn{n}@mx.test"], f"Subject: earn {n}\r\n\r\nx\r\n")
        # Then a backlog at Postfix's default concurrency of 20, four times the scaled cap,
        # and far past the scaled rates.
        relayhost = f"[127.0.0.1]:{receiver.port}"
        with private_postfix(
            tmp_path / "postfix", relayhost=relayhost, smtp_tls_security_level="encrypt"
        ) as postfix:
            started = time.monotonic()
            with postfix.smtp() as client:
                for n in range(BACKLOG):
                    body = f"Subject: backlog {n}\r\nFrom: {SENDER}\r\n\r\nissue {n}\r\n"
                    client.sendmail(SENDER, [f"reader{n % 10}@mx.test"], body)
            left = postfix.wait_settled(120)
            elapsed = time.monotonic() - started
            statuses, deferred = postfix.statuses(), postfix.reasons("deferred")
    summary = f"{statuses} in {elapsed:.0f}s; deferred: {deferred}"
    assert not left and deferred == Counter(), summary
    assert statuses["sent"] == BACKLOG, summary
    assert not AUTOBAN.search(receiver.log()), summary
    url = receiver.http_url
    assert sample(url, "floodgate_connections_total", outcome="per_ip_cap") == 0
    assert sample(url, "floodgate_connections_total", outcome="connection_rate") == 0
    assert sample(url, "floodgate_messages_total", outcome="stored") == BACKLOG + 5


def test_without_evidence_the_same_backlog_meets_the_limits(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    # The control: no authentication checks, no karma; the same Postfix is held back by
    # the scaled limits (and retries later, as MTAs do): the limits still stop a flood.
    receiver = make_receiver(**SCALED)
    relayhost = f"[127.0.0.1]:{receiver.port}"
    with private_postfix(
        tmp_path / "postfix", relayhost=relayhost, smtp_tls_security_level="encrypt"
    ) as postfix:
        with postfix.smtp() as client:
            for n in range(40):
                body = f"Subject: held {n}\r\nFrom: {SENDER}\r\n\r\nissue {n}\r\n"
                client.sendmail(SENDER, [f"held{n % 10}@mx.test"], body)
        postfix.wait_settled(60)
        deferred = sum(postfix.reasons("deferred").values())
    refused = sum(
        sample(receiver.http_url, "floodgate_connections_total", outcome=outcome)
        for outcome in ("per_ip_cap", "connection_rate")
    )
    assert deferred > 0 and refused > 0, (deferred, refused)


@pytest.mark.parametrize("concurrency", [20, 50])
def test_a_cap_equal_to_postfix_concurrency_is_never_hit_with_two_workers(
    make_receiver: ServiceFactory, tmp_path: Path, concurrency: int
) -> None:
    # Postfix opens its next connection as soon as it reads our 221. A slot now goes back
    # before the 221 leaves the worker, and the door reads the workers' closes before it
    # refuses for a cap: a cap of exactly the sender's concurrency is never hit (a cap of
    # 20 used to refuse a stock Postfix 15-18 times in 300 messages, with one process).
    receiver = make_receiver(
        workers="2",
        max_connections_per_ip=str(concurrency),
        connection_rate="0",
        message_rate="0",
        tls_handshake_rate="0",
    )
    relayhost = f"[127.0.0.1]:{receiver.port}"
    with private_postfix(
        tmp_path / "postfix",
        relayhost=relayhost,
        smtp_tls_security_level="encrypt",
        default_destination_concurrency_limit=str(concurrency),
    ) as postfix:
        with postfix.smtp() as client:
            for n in range(200):
                body = f"Subject: race {n}\r\nFrom: {SENDER}\r\n\r\nrace {n}\r\n"
                client.sendmail(SENDER, [f"race{n % 10}@mx.test"], body)
        left = postfix.wait_settled(120)
        statuses, deferred = postfix.statuses(), postfix.reasons("deferred")
    assert not left and deferred == Counter() and statuses["sent"] == 200, (statuses, deferred)
    assert sample(receiver.http_url, "floodgate_connections_total", outcome="per_ip_cap") == 0
