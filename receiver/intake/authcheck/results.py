"""Verdicts as stored (the `auth` field) and as our `Authentication-Results:` header
(RFC 8601), and the removal of arriving headers that claim to be ours (RFC 8601 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from receiver.intake.authcheck.authserv import claims, suspect
from receiver.intake.authcheck.dmarc import DkimResult, DmarcResult
from receiver.intake.authcheck.spf import SpfResult

__all__ = ["MAX_READ", "Verdicts", "authentication_results", "strip_forged"]

MAX_READ = 32  # Authentication-Results fields that may name our id read in full per message

# What may stand in a header's property value or comment: no CR, LF, ';', '(', ')', '\\'
# or quote can come from a sender's text into our header.
_VALUE = re.compile(r"[^A-Za-z0-9.@_+=-]")
_COMMENT = re.compile(r"[^A-Za-z0-9 .,:=@_+/'-]")
_HEAD_END = re.compile(rb"\r\n\r\n")
# One Authentication-Results field with its continuation lines (RFC 5322 2.2.3).
_AR_FIELD = re.compile(
    rb"^authentication-results[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Every check's outcome for one message."""

    spf: SpfResult
    helo: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult | None = None
    arc: tuple[str, str] = ("none", "")

    def document(self) -> dict[str, object]:
        """The stored `auth` field (the contract the API and the page read)."""
        dmarc = self.dmarc
        return {
            "spf": _spf(self.spf),
            "helo": _spf(self.helo),
            "dkim": [
                {"result": d.result, "domain": d.domain, "selector": d.selector, "reason": d.reason}
                for d in self.dkim
            ],
            "dmarc": {
                "result": dmarc.result if dmarc else "none",
                "domain": dmarc.domain if dmarc else "",
                "policy": dmarc.policy if dmarc else None,
                "spf_aligned": dmarc.spf_aligned if dmarc else False,
                "dkim_aligned": dmarc.dkim_aligned if dmarc else False,
                "reason": dmarc.reason if dmarc else "",
            },
            "arc": {"result": self.arc[0], "reason": self.arc[1]},
        }


def _spf(result: SpfResult) -> dict[str, str]:
    return {"result": result.result, "domain": result.domain, "reason": result.reason}


def authentication_results(authserv_id: str, verdicts: Verdicts, sender: str) -> bytes:
    """Our header (RFC 8601 2.2), one method per folded line; values are sanitised."""
    spf, helo = verdicts.spf, verdicts.helo
    mailfrom = _value(sender) if sender else _value(f"postmaster@{spf.domain}")
    parts = [
        f"spf={spf.result}{_comment(spf.reason)} smtp.mailfrom={mailfrom}",
        f"spf={helo.result}{_comment(helo.reason)} smtp.helo={_value(helo.domain)}",
    ]
    parts += [
        f"dkim={d.result}{_comment(d.reason)} header.d={_value(d.domain)} "
        f"header.s={_value(d.selector)}"
        for d in verdicts.dkim
    ] or ["dkim=none"]
    dmarc = verdicts.dmarc
    if dmarc is not None:
        # The policy in the comment, as the big receivers write it: no registered
        # property carries it (RFC 8601 2.7.1 lists header.from only).
        said = f"p={dmarc.policy} {dmarc.reason}" if dmarc.policy else dmarc.reason
        parts.append(f"dmarc={dmarc.result}{_comment(said)} header.from={_value(dmarc.domain)}")
    parts.append(f"arc={verdicts.arc[0]}{_comment(verdicts.arc[1])}")
    text = f"Authentication-Results: {_value(authserv_id)};\r\n\t" + ";\r\n\t".join(parts)
    return (text + "\r\n").encode("ascii", "replace")


def _value(text: str) -> str:
    return _VALUE.sub("_", text[:255]) or "unknown"


def _comment(reason: str) -> str:
    cleaned = _COMMENT.sub("", reason[:100]).strip()
    return f" ({cleaned})" if cleaned else ""


def strip_forged(raw: bytes, authserv_id: str) -> bytes:
    """`raw` without the Authentication-Results fields of its header section that name
    our authserv-id, however spelled (RFC 8601 5: a border MTA removes what claims to be
    from inside its trust boundary; `authserv.claims` reads the id as a consumer would).
    Everything else stays byte-exact; the same bytes when none does."""
    end = _HEAD_END.search(raw)
    head_end = end.start() + 2 if end is not None else len(raw)
    head = raw[:head_end]
    kept: list[bytes] = []
    start = 0
    read = 0
    for match in _AR_FIELD.finditer(head):
        value = match[1].decode("utf-8", "replace")
        if not suspect(value, authserv_id):
            continue
        # Past MAX_READ suspect fields, one is removed unread: real mail carries a few
        # Authentication-Results fields, and a message of thousands that name our id
        # would otherwise cost the loop a parse of each.
        read += 1
        if read > MAX_READ or claims(value, authserv_id):
            kept.append(head[start : match.start()])
            start = match.end()
    if not kept:
        return raw
    return b"".join(kept) + raw[start:]
