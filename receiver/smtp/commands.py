"""One small function per SMTP verb: each reads the session's state and returns a reply
from the table (`receiver.replies`), or None when it has closed the session itself.

Policy comes from plain values (the context's domains, the policy's limits); nothing here
writes to the transport except through `Session.close_with` or `Session.start_data`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailstore.addresses import NULL_SENDER, Address, AddressError, parse_path
from receiver import replies
from receiver.replies import Reply
from receiver.vocabulary import Closed, MessageOutcome, RecipientOutcome, Refused, TlsOutcome

if TYPE_CHECKING:
    from receiver.smtp.session import Session

Handler = Callable[["Session", bytes], Reply | None]
# Commands that must end a pipelined group (RFC 2920 3.1, plus HELO, STARTTLS (RFC 3207
# 4.2), AUTH and ETRN): the client must wait for their reply before sending more. A client
# never offered PIPELINING (no EHLO yet, or HELO) must wait after every command. Postfix:
# smtpd_forbid_unauth_pipelining.
GROUP_ENDERS = frozenset(
    {b"EHLO", b"HELO", b"DATA", b"VRFY", b"EXPN", b"TURN", b"ETRN", b"QUIT", b"NOOP"}
    | {b"STARTTLS", b"AUTH"}
)
# RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8: the MAIL parameters we support.
BODY_TYPES = frozenset({"7BIT", "8BITMIME"})


def helo(session: Session, arg: bytes) -> Reply | None:
    return _hello(session, arg, extended=False)


def ehlo(session: Session, arg: bytes) -> Reply | None:
    return _hello(session, arg, extended=True)


def _hello(session: Session, arg: bytes, *, extended: bool) -> Reply | None:
    name = arg.strip(b" ")
    if not name:
        return replies.SYNTAX_EHLO if extended else replies.SYNTAX_HELO
    if not name.isascii():
        return replies.NOT_ASCII_COMMAND
    session.helo = name.decode("ascii")
    session.esmtp = extended
    session.reset_transaction()  # RFC 5321 4.1.4: EHLO/HELO clear the transaction
    if not extended:
        return session.wire.helo
    # Offered whenever TLS is on: a busy receiver queues handshakes, it never hides
    # STARTTLS (that would downgrade every sender to cleartext during a handshake flood).
    if session.ctx.tls is not None and session.tls is None:
        return session.wire.ehlo_starttls
    return session.wire.ehlo


def mail(session: Session, arg: bytes) -> Reply | None:
    if session.helo is None:
        return replies.NEED_HELO
    if session.sender is not None:
        return replies.NESTED_MAIL
    try:
        text = _after(arg, b"FROM:")
        if text is None:
            return replies.SYNTAX_MAIL
        address, params = parse_path(text, utf8=True)
    except UnicodeDecodeError:
        return replies.BAD_SENDER
    except AddressError as error:
        return _address_reply(error, sender=True)
    options = _mail_params(session, params)
    if isinstance(options, Reply):
        return options
    if address.utf8 and not options:
        return replies.NOT_ASCII_ADDRESS
    if address is not NULL_SENDER and not address.domain:
        return replies.BAD_SENDER  # a bare <postmaster> names no domain to reply to
    deferral = session.ctx.policy.mail(session.client.key, session.client.unlimited)
    if deferral is not None:
        session.ctx.events.message(MessageOutcome.MESSAGE_RATE)
        session.refuse(deferral.reason, deferral.reply)
        return None
    # SPF starts now, while the client sends RCPT and DATA.
    session.open_transaction(address.mailbox, options)
    return replies.OK


def _mail_params(session: Session, params: str) -> bool | Reply:
    """SMTPUTF8 in force (bool), or the reply refusing the parameters."""
    seen: set[str] = set()
    utf8 = False
    for param in params.split():
        keyword, _, value = param.partition("=")
        keyword = keyword.upper()
        if keyword in seen or not session.esmtp:
            return replies.BAD_PARAMETER
        seen.add(keyword)
        if keyword == "SIZE":
            if not value.isdigit() or len(value) > 20:
                return replies.SYNTAX_MAIL
            if int(value) > session.ctx.policy.normal.max_message_size:
                return replies.SIZE_DECLARED_TOO_BIG
        elif keyword == "BODY":
            if value.upper() not in BODY_TYPES:
                return replies.BAD_PARAMETER
        elif keyword == "SMTPUTF8" and not value:
            utf8 = True
        else:
            return replies.BAD_PARAMETER
    return utf8


def rcpt(session: Session, arg: bytes) -> Reply | None:
    if session.sender is None:
        return replies.NEED_MAIL
    try:
        text = _after(arg, b"TO:")
    except UnicodeDecodeError:
        reply, outcome = replies.BAD_ADDRESS, RecipientOutcome.BAD_ADDRESS
    else:
        if text is None:
            return replies.SYNTAX_RCPT
        reply, outcome = _judge_recipient(session, text)
    session.ctx.events.recipient(outcome)
    if outcome is RecipientOutcome.RECIPIENT_RATE:
        session.refuse(Refused.RECIPIENT_RATE, reply)
        return None
    if outcome is RecipientOutcome.MAILBOX_RATE:
        session.refuse(Refused.MAILBOX_RATE, reply)
        return None
    return reply


def _judge_recipient(session: Session, text: str) -> tuple[Reply, RecipientOutcome]:
    try:
        address, params = parse_path(text, utf8=True)
    except AddressError as error:
        return _address_reply(error, sender=False), RecipientOutcome.BAD_ADDRESS
    if params:  # no RCPT parameters are offered
        return replies.BAD_PARAMETER, RecipientOutcome.BAD_ADDRESS
    if address is NULL_SENDER:
        return replies.BAD_ADDRESS, RecipientOutcome.BAD_ADDRESS
    if address.utf8 and not session.utf8:
        return replies.NOT_ASCII_ADDRESS, RecipientOutcome.BAD_ADDRESS
    if session.screened is not None:  # listed (`enforce`): the dialogue goes on, counted
        return session.screened, RecipientOutcome.DNSBL
    mailbox = _our_mailbox(session, address)
    if mailbox is None:
        return replies.RELAY_DENIED, RecipientOutcome.RELAY_DENIED  # never an open relay
    policy = session.ctx.policy
    if session.rcpt_count >= policy.limits.max_recipients:  # duplicates count, as in Postfix
        return replies.TOO_MANY_RECIPIENTS, RecipientOutcome.TOO_MANY
    deferral = policy.rcpt(session.client.key, session.client.unlimited)
    if deferral is not None:
        return deferral.reply, RecipientOutcome.RECIPIENT_RATE
    if mailbox not in session.recipients:
        deferral = policy.mailbox(mailbox)
        if deferral is not None:
            return deferral.reply, RecipientOutcome.MAILBOX_RATE
    session.rcpt_count += 1
    if mailbox not in session.recipients:
        session.recipients.append(mailbox)
    return replies.RCPT_OK, RecipientOutcome.ACCEPTED


def _our_mailbox(session: Session, address: Address) -> str | None:
    if not address.domain:  # <postmaster>, accepted for us (RFC 5321 4.5.1)
        return session.ctx.postmaster
    return address.mailbox if address.domain in session.ctx.domains else None


def data(session: Session, arg: bytes) -> Reply | None:
    if session.helo is None:
        return replies.NEED_HELO
    if not session.recipients:
        return replies.NEED_MAIL if session.sender is None else replies.BAD_SEQUENCE_NEED_RCPT
    if arg:
        return replies.SYNTAX_DATA
    # Content sent before our 354 never gets here: DATA ends a group (GROUP_ENDERS).
    session.start_data()
    return None


def rset(session: Session, arg: bytes) -> Reply | None:
    if not session.junk():
        return None
    session.reset_transaction()
    return replies.RSET_OK


def noop(session: Session, arg: bytes) -> Reply | None:
    return replies.NOOP_OK if session.junk() else None


def vrfy(session: Session, arg: bytes) -> Reply | None:
    if not session.junk():
        return None
    return replies.VRFY_CANNOT if arg.strip() else replies.SYNTAX_VRFY


def expn(session: Session, arg: bytes) -> Reply | None:
    return replies.NOT_IMPLEMENTED if session.junk() else None


def help_(session: Session, arg: bytes) -> Reply | None:
    return replies.HELP if session.junk() else None


def quit_(session: Session, arg: bytes) -> Reply | None:
    session.close_with(replies.BYE, Closed.QUIT)
    return None


def starttls(session: Session, arg: bytes) -> Reply | None:
    # Whatever followed STARTTLS in the same read was refused before this runs
    # (GROUP_ENDERS): the injection class of CVE-2011-0411 and CVE-2024-34083.
    tls = session.ctx.tls
    if tls is None:
        return replies.TLS_UNAVAILABLE
    if session.tls is not None:
        return replies.ALREADY_TLS
    if arg.strip(b" "):
        return replies.SYNTAX_STARTTLS
    if session.helo is None or not session.esmtp:
        return replies.NEED_EHLO
    if tls.begin(session.client.key, session.client.unlimited) is not None:
        session.ctx.events.tls(TlsOutcome.REFUSED_RATE, "none")
        return replies.TLS_BUSY
    session.start_tls()
    return None


def auth(session: Session, arg: bytes) -> Reply | None:
    return replies.AUTH_UNSUPPORTED


def not_implemented(session: Session, arg: bytes) -> Reply | None:
    return replies.NOT_IMPLEMENTED


def proxy(session: Session, arg: bytes) -> Reply | None:
    # The door reads a trusted proxy's header before any banner: after the banner, from
    # anyone, it is an attempt to spoof an address.
    session.refuse(Refused.UNTRUSTED_PROXY, replies.UNTRUSTED_PROXY, close=Closed.UNTRUSTED_PROXY)
    return None


VERBS: dict[bytes, Handler] = {
    b"HELO": helo,
    b"EHLO": ehlo,
    b"MAIL": mail,
    b"RCPT": rcpt,
    b"DATA": data,
    b"RSET": rset,
    b"NOOP": noop,
    b"VRFY": vrfy,
    b"EXPN": expn,
    b"HELP": help_,
    b"QUIT": quit_,
    b"STARTTLS": starttls,
    b"AUTH": auth,
    b"BDAT": not_implemented,
    b"ETRN": not_implemented,
    b"TURN": not_implemented,
    b"PROXY": proxy,
}


def _after(arg: bytes, prefix: bytes) -> str | None:
    """The text after `FROM:` / `TO:` (any case), decoded; None if the prefix is absent.

    Non-ASCII must be valid UTF-8 (else UnicodeDecodeError, answered 553); whether it is
    allowed at all is decided with the address (SMTPUTF8, RFC 6531 3.4).
    """
    if arg[: len(prefix)].upper() != prefix:
        return None
    return arg[len(prefix) :].decode("utf-8")


def _address_reply(error: AddressError, *, sender: bool) -> Reply:
    """501 for syntax, 553 for a well-formed path we will not take, 553 5.6.7 for UTF-8."""
    if error.kind == "utf8":
        return replies.NOT_ASCII_ADDRESS
    if error.kind == "syntax":
        return replies.SYNTAX_SENDER if sender else replies.SYNTAX_RECIPIENT
    return replies.BAD_SENDER if sender else replies.BAD_ADDRESS
