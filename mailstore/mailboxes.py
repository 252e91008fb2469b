"""The mailbox index: one scalar key per (mailbox, message), what listings and trims range over.

A message names its mailboxes in an array (`rcpt`). MongoDB indexes array elements (a
multikey index), but the embedded store cannot: it indexes one SQL expression per
document, and an array is one value there, so every query on `rcpt` read the whole store.
A key, `<mailbox> TAB <message id>`, names one mailbox as a scalar, which every engine
indexes and ranges over: a mailbox is a key range, newest first is the key order (ids sort
by time), and a listing cursor is a tighter bound in the same range.

The first mailbox's key is kept in the message itself (`box`): nearly every message has
one recipient, and the embedded store commits (and syncs) each document it is sent on its
own, so a second document per message would double the cost of every insert. Each further
mailbox gets an entry of its own here, keyed the same way, written after the message. The
key is in an entry's `_id` (a retried write of the same entry is the same entry) and again
in `box`, which is what queries range over: the embedded store answers a range on `_id` by
reading every document. Entries expire with their message (`expiry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

ENTRIES = "mailbox_entries"
# A mailbox never holds a control character (mailstore.addresses refuses them), so the
# tab ends the mailbox part of a key and the next character bounds its range.
SEPARATOR = "\t"
_PAST = chr(ord(SEPARATOR) + 1)


class EntryKey(StrEnum):
    """The keys of a mailbox entry."""

    ID = "_id"
    BOX = "box"  # the same key as _id, for range queries
    EXPIRY = "expiry"  # the message's expiry, POSIX seconds


def entry_key(mailbox: str, message_id: str) -> str:
    return f"{mailbox}{SEPARATOR}{message_id}"


def message_id_of(key: str) -> str:
    return key.rpartition(SEPARATOR)[2]


def first_key(mailbox: str) -> str:
    """A bound below every key of `mailbox` (and above every key of any other mailbox
    that sorts before it)."""
    return mailbox + SEPARATOR


def past_key(mailbox: str) -> str:
    """A bound above every key of `mailbox`."""
    return mailbox + _PAST


def entries(message_id: str, mailboxes: Iterable[str], expiry: int) -> list[dict[str, Any]]:
    """Entries of one message for these mailboxes (one per distinct mailbox)."""
    keys = dict.fromkeys(entry_key(m.lower(), message_id) for m in mailboxes)
    return [{EntryKey.ID: k, EntryKey.BOX: k, EntryKey.EXPIRY: expiry} for k in keys]


def split(message_id: str, mailboxes: Iterable[str]) -> tuple[str | None, list[str]]:
    """The key kept in the message (its first mailbox's) and the other mailboxes, which
    get entries."""
    distinct = list(dict.fromkeys(m.lower() for m in mailboxes))
    if not distinct:
        return None, []
    return entry_key(distinct[0], message_id), distinct[1:]
