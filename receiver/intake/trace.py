"""Our `Received:` trace line (RFC 5321 4.4), built only from sanitised text."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime

MAX_NAME = 255  # RFC 5321 4.5.3.1.2 caps a domain at 255 octets
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
# A recipient is named in `for` only when it needs no quoting or escaping at all.
_PLAIN = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9.-]{1,255}")


class DateCache:
    """RFC 5322 dates for the trace line, formatted once per second, not per message."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format(self, when: datetime) -> str:
        second = int(when.timestamp())
        if second != self._second:
            self._second = second
            self._text = email.utils.format_datetime(when.replace(microsecond=0))
        return self._text


def safe_name(text: str | None) -> str:
    """A client-supplied name (HELO, reverse DNS) reduced to harmless characters."""
    return _UNSAFE.sub("?", (text or "")[:MAX_NAME]) or "unknown"


def received_header(
    *,
    helo: str,
    ip: str,
    client_name: str | None,
    hostname: str,
    protocol: str,
    message_id: str,
    recipients: list[str],
    when: str,
    tls: tuple[str, str] | None = None,
) -> bytes:
    """The trace line; `for` names only a lone, plain recipient (no Bcc leaks).

    `helo` and `client_name` come from the client: no CR, LF, control, ';' or space can
    survive `safe_name`, so no header can be injected and no extra `by` hop faked.
    """
    literal = f"IPv6:{ip}" if ":" in ip else ip
    name = f"{safe_name(client_name)} [{literal}]" if client_name else f"[{literal}]"
    recipient = ""
    if len(recipients) == 1 and _PLAIN.fullmatch(recipients[0]):
        recipient = f"\r\n\tfor <{recipients[0]}>"
    # Postfix's form: "(using TLSv1.3 with cipher ...)" after the from clause.
    using = f"\r\n\t(using {tls[0]} with cipher {tls[1]})" if tls is not None else ""
    text = (
        f"Received: from {safe_name(helo)} ({name}){using}\r\n\tby {hostname} (Floodgate) with "
        f"{protocol} id {message_id}{recipient};\r\n\t{when}\r\n"
    )
    return text.encode("ascii", "replace")
