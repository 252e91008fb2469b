"""A registered endpoint as the dispatcher holds it: its URL, its secret, what it matches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    match: str  # "" every message, a domain, or an address
    secret: str
    disabled: bool

    @classmethod
    def read(cls, document: dict[str, Any]) -> Endpoint:
        return cls(
            str(document["_id"]),
            str(document["url"]),
            str(document.get("match") or ""),
            str(document["secret"]),
            bool(document.get("disabled", False)),
        )

    def matches(self, mailbox: str) -> bool:
        if not self.match:
            return True
        if "@" in self.match:
            return mailbox == self.match
        return mailbox.rpartition("@")[2] == self.match
