"""One small function per SMTP verb: each reads the session's state and returns a reply
from the table (`receiver.replies`), or None when it has closed the session itself.

Policy comes from plain values (the context's domains, the admission limits); nothing here
writes to the transport except through `Session.close_with` or `Session.start_data`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailstore.addresses import NULL_SENDER, Address, AddressError, parse_path
from receiver import replies
from receiver.replies import Reply

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
    refusal = session.ctx.admission.mail(session.client_key, session.allowed)
    if refusal is not None:
        session.ctx.events.on_message("message_rate")
        session.ctx.events.on_refused(session.client_key, refusal.reason)
        return refusal.reply
    session.sender = address.mailbox
    session.utf8 = options
    session.begin_auth()  # SPF starts now, while the client sends RCPT and DATA
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
            if int(value) > session.ctx.admission.normal.max_message_size:
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
        reply, outcome = replies.BAD_ADDRESS, "bad_address"
    else:
        if text is None:
            return replies.SYNTAX_RCPT
        reply, outcome = _judge_recipient(session, text)
    session.ctx.events.on_recipient(outcome)
    return reply


def _judge_recipient(session: Session, text: str) -> tuple[Reply, str]:
    try:
        address, params = parse_path(text, utf8=True)
    except AddressError as error:
        return _address_reply(error, sender=False), "bad_address"
    if params:
        return replies.BAD_PARAMETER, "bad_address"  # no RCPT parameters are offered
    if address is NULL_SENDER:
        return replies.BAD_ADDRESS, "bad_address"
    if address.utf8 and not session.utf8:
        return replies.NOT_ASCII_ADDRESS, "bad_address"
    if session.screened is not None:  # listed (`enforce`): the dialogue goes on, counted
        return session.screened, "dnsbl"
    mailbox = _our_mailbox(session, address)
    if mailbox is None:
        return replies.RELAY_DENIED, "relay_denied"  # never an open relay
    limits = session.ctx.admission.limits
    if session.rcpt_count >= limits.max_recipients:  # duplicates count too, as in Postfix
        return replies.TOO_MANY_RECIPIENTS, "too_many"
    refusal = session.ctx.admission.rcpt(session.client_key, session.allowed)
    if refusal is not None:
        session.ctx.events.on_refused(session.client_key, refusal.reason)
        return refusal.reply, "recipient_rate"
    if mailbox not in session.recipients:
        refusal = session.ctx.admission.mailbox(mailbox)
        if refusal is not None:  # summarised by mailbox, never logged one by one
            session.ctx.events.on_refused(mailbox, refusal.reason)
            return refusal.reply, "mailbox_rate"
    session.rcpt_count += 1
    if mailbox not in session.recipients:
        session.recipients.append(mailbox)
    return replies.RCPT_OK, "accepted"


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
    session.close_with(replies.BYE, "quit")
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
    if tls.begin(session.client_key, session.allowed) is not None:
        session.ctx.events.on_tls("refused_rate", "none")
        return replies.TLS_BUSY
    session.start_tls()
    return None


def auth(session: Session, arg: bytes) -> Reply | None:
    return replies.AUTH_UNSUPPORTED


def not_implemented(session: Session, arg: bytes) -> Reply | None:
    return replies.NOT_IMPLEMENTED


def proxy(session: Session, arg: bytes) -> Reply | None:
    # Only sessions from trusted proxies read a PROXY header (before the banner); from
    # anyone else it is an attempt to spoof their address.
    session.ctx.events.on_refused(session.client_key, "untrusted_proxy")
    session.close_with(replies.UNTRUSTED_PROXY, "untrusted_proxy")
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
