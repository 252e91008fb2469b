"""Command pipelining, judged against Postfix: the same bytes to both, the same class of answer.

The yardstick is a private Postfix 3.7 smtpd (tests/support/postfix.py) with
`smtpd_forbid_unauth_pipelining = yes` (a default from Postfix 3.9 on; in 3.7 it is there
but off): it answers `554 5.5.0 Error: SMTP protocol synchronization` and disconnects when
a client sends past a command that must end a group (RFC 2920 3.1: EHLO, HELO, DATA, NOOP,
QUIT...), when a client never offered PIPELINING sends more than one command at a time
(RFC 2920 3), and when anything follows DATA before its reply, whatever that reply is.
A correct RFC 2920 group, and QUIT right after the final dot, are accepted.

Postfix sees 127.0.0.1 as an outside client (not in mynetworks) relaying for no domain but
mx.test, like our receiver; what it accepts goes to its discard transport, so nothing
leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from receiver import replies
from tests.support.postfix import PrivatePostfix, private_postfix
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient

QUIET = 1.0  # seconds without a reply after which the server is taken to be waiting
CONTENT = b"Subject: pipelined\r\n\r\nbody\r\n.\r\n"
EHLO = b"EHLO client.test\r\n"
HELO = b"HELO client.test\r\n"
MAIL = b"MAIL FROM:<a@sender.test>\r\n"
RCPT = b"RCPT TO:<x@mx.test>\r\n"
RCPT_2 = b"RCPT TO:<y@mx.test>\r\n"
RCPT_REFUSED = b"RCPT TO:<x@elsewhere.example>\r\n"  # neither server relays for it
DATA = b"DATA\r\n"
NOOP = b"NOOP\r\n"
QUIT = b"QUIT\r\n"
STORED = replies.STORED
QUEUED = f"{STORED.code} {STORED.status} {STORED.text.split('{')[0]}".encode()


@dataclass(frozen=True)
class Case:
    """Commands sent one at a time (each awaits its reply), then one write of `pipelined`."""

    name: str
    synchronous: tuple[bytes, ...]
    pipelined: bytes
    refused: bool  # RFC 2920 and the issue: 554 5.5.0 and disconnect


CASES = (
    Case("ehlo_then_mail_in_one_write", (), EHLO + MAIL, refused=True),
    Case("helo_then_mail_in_one_write", (), HELO + MAIL, refused=True),
    Case("noop_then_noop_in_one_write", (EHLO,), NOOP + NOOP, refused=True),
    Case("content_in_the_data_write", (EHLO,), MAIL + RCPT + DATA + CONTENT, refused=True),
    Case(
        "content_after_data_refused_in_a_group",
        (EHLO,),
        MAIL + RCPT_REFUSED + DATA + CONTENT,
        refused=True,
    ),
    Case(
        "content_after_data_refused_alone",
        (EHLO, MAIL, RCPT_REFUSED),
        DATA + CONTENT,
        refused=True,
    ),
    Case("group_from_a_helo_client", (HELO,), MAIL + RCPT, refused=True),
    Case("rfc2920_group", (EHLO,), MAIL + RCPT + RCPT_2 + DATA, refused=False),
    Case("quit_after_the_final_dot", (EHLO, MAIL, RCPT, DATA), CONTENT + QUIT, refused=False),
)


@dataclass(frozen=True)
class Answer:
    """Every reply line to the pipelined write, and whether the server then closed."""

    lines: tuple[bytes, ...]
    closed: bool

    @property
    def refused(self) -> bool:
        return self.closed and any(line.startswith(b"554 5.5.0 ") for line in self.lines)

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(int(line[:3]) for line in self.lines if line[3:4] == b" ")


def converse(port: int, case: Case, source: str | None = None) -> Answer:
    client = RawClient("127.0.0.1", port, source=source)
    assert client.reply().code == 220
    for command in case.synchronous:
        client.send(command)
        client.reply()
    client.send(case.pipelined)
    client.sock.settimeout(QUIET)
    lines: list[bytes] = []
    try:
        while True:
            reply = client.reply()
            last = len(reply.lines) - 1
            lines.extend(
                f"{reply.code}{' ' if n == last else '-'}{line}".encode()
                for n, line in enumerate(reply.lines)
            )
    except TimeoutError:
        return Answer(tuple(lines), closed=client.closed_by_server(0.2))
    except ConnectionError:
        return Answer(tuple(lines), closed=True)


@pytest.fixture(scope="module")
def postfix_smtpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostfix]:
    with private_postfix(
        tmp_path_factory.mktemp("postfix-smtpd"),
        smtpd_forbid_unauth_pipelining="yes",
        mynetworks="192.0.2.1/32",  # TEST-NET-1: 127.0.0.1 is an outside client here
        relay_domains="mx.test",
        relay_transport="discard",
        default_transport="discard",
    ) as postfix:
        yield postfix


def case_id(case: Case) -> str:
    return case.name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_postfix_refuses_improper_pipelining_and_takes_proper(
    case: Case, postfix_smtpd: PrivatePostfix
) -> None:
    """The yardstick itself: Postfix answers each sequence as RFC 2920 says."""
    answer = converse(postfix_smtpd.port, case)
    assert answer.refused == case.refused, answer
    if not case.refused:
        assert not answer.closed or answer.codes[-1] == 221, answer


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_receiver_answers_pipelining_as_postfix_does(
    case: Case, shared_receiver: ServiceProcess, postfix_smtpd: PrivatePostfix, client_ip: str
) -> None:
    ours = converse(shared_receiver.port, case, client_ip)
    assert ours.refused == case.refused, ours
    if case.refused:
        # 554 5.5.0 is the last word, then the connection closes (RFC 2920 3.1).
        assert ours.lines[-1] + b"\r\n" == replies.IMPROPER_PIPELINING.line(), ours
        # Nothing pipelined was taken as a message.
        assert not any(line.startswith(QUEUED) for line in ours.lines), ours
    theirs = converse(postfix_smtpd.port, case)
    assert ours.refused == theirs.refused, f"ours {ours}, Postfix {theirs}"
    if not case.refused:
        assert ours.codes == theirs.codes, f"ours {ours}, Postfix {theirs}"
